"""common.constants: the numbers of the reference's layout, and the registry both data_gen and the feeders use."""

from __future__ import annotations

from pathlib import Path

from common import constants as c
from data_gen import ntu_gendata, pku_gendata, pyskl_convert
from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS
from feeders.datasets import split_paths


def test_sample_layout_is_the_reference_s():
    assert c.SAMPLE_SHAPE == (c.NUM_COORDINATES, c.NUM_FRAMES, c.NUM_JOINTS, c.NUM_PERSONS) == (3, 300, 25, 2)
    assert c.VALUES_PER_FRAME == 150 and c.WINDOW_SIZE == 64 and c.MAX_BODIES == 4
    assert c.PARTS == ("train", "val")


def test_datasets_registry():
    num_class = {name: spec["num_class"] for name, spec in c.DATASETS.items()}
    assert num_class == {"ntu60": 60, "ntu120": 120, "pku1": 51, "pku2": 41}
    assert tuple(c.DATASETS) == (*c.NTU_DATASETS, "pku1", "pku2")
    assert c.DATASETS["ntu60"]["benchmarks"] == ("xsub", "xview")  # the reference's writing order
    assert c.DATASETS["ntu120"]["benchmarks"] == ("xsub", "xsetup")
    for spec in c.DATASETS.values():
        assert set(spec["benchmarks"]) == set(spec["protocols"].values())
    assert c.VALID_PAIRS == (
        "ntu60/cross_view",
        "ntu60/cross_subject",
        "ntu120/cross_setup",
        "ntu120/cross_subject",
        "pku1/cross_subject",
        "pku1/cross_view",
        "pku2/cross_subject",
    )
    assert c.default_out_folder("ntu60") == "./data/NTU-RGB-D-60-AGCN"
    assert c.default_out_folder("pku2") == "./data/PKU-MMD-2"


def test_data_gen_writes_where_the_feeders_read(tmp_path):
    """Each converter's default folder and benchmarks are the folders split_paths resolves protocols to."""
    for name, spec in c.DATASETS.items():
        written = {Path(c.default_out_folder(name)).name + "/" + b for b in spec["benchmarks"]}
        read = {
            str(split_paths(tmp_path, name, protocol, "train").data.parent.relative_to(tmp_path))
            for protocol in spec["protocols"]
        }
        assert written == read, name
    assert pku_gendata.PHASES == {1: "pku1", 2: "pku2"}
    for phase, dataset in pku_gendata.PHASES.items():  # every benchmark of the dataset has its split files
        assert set(c.DATASETS[dataset]["benchmarks"]) <= set(pku_gendata.SPLIT_NAMES[phase])
    assert ntu_gendata.build_parser().get_default("dataset") == "ntu60"
    choices = {a.dest: a.choices for a in pyskl_convert.build_parser()._actions}
    assert tuple(choices["dataset"]) == ("auto", "ntu60", "ntu120")


def test_resources_and_slot_names():
    assert c.ACTION_NAMES_FILE.is_file() and c.ACTION_NAMES_FILE.parent == c.RESOURCES_FOLDER
    assert all(path.parent == c.RESOURCES_FOLDER and path.is_file() for path in DEFAULT_IGNORED_LISTS.values())
    assert c.ENCODER_PAIRS == (("encoder_q", "encoder_k"), ("encoder_r", "encoder_l"))  # the reference's order
    assert c.QUERY_ENCODERS == ("encoder_q", "encoder_r") and c.CHECKPOINT_PREFIX == "module."
