"""manifest.json: what it records, a changed byte found by verify, the cheap check the datasets run, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common import manifest as mf
from common.split_folder import read_npy_header
from data_gen import manifest as manifest_cli
from tests.helpers import SPLIT_FILES, load_part, make_prepared_root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared_root(tmp_path_factory.mktemp("manifest")) / "NTU-RGB-D-60-AGCN" / "xsub"


@pytest.fixture
def folder(prepared, tmp_path) -> Path:
    copy = tmp_path / "xsub"
    shutil.copytree(prepared, copy)
    mf.write_manifest(copy, tool="data_gen/ntu_gendata.py", arguments={"dataset": "ntu60", "workers": 1})
    return copy


@pytest.fixture(autouse=True)
def fresh_warning_memory(monkeypatch):
    monkeypatch.setattr(mf, "_WARNED", set())


def test_manifest_records_files_parts_and_provenance(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tool"] == "data_gen/ntu_gendata.py"
    assert manifest["arguments"] == {"dataset": "ntu60", "workers": 1}
    assert isinstance(manifest["project_version"], str) and manifest["project_version"]
    assert sorted(manifest["files"]) == sorted(SPLIT_FILES)
    for name, entry in manifest["files"].items():
        content = (folder / name).read_bytes()
        assert entry["size"] == len(content) and entry["sha256"] == hashlib.sha256(content).hexdigest()
        if name.endswith(".npy"):
            array = np.load(folder / name)
            assert entry["shape"] == list(array.shape) and entry["dtype"] == array.dtype.name
    for part in ("train", "val"):
        _, _, labels, _ = load_part(folder, part)
        counts = Counter(labels)
        assert manifest["parts"][part] == {
            "samples": len(labels),
            "class_counts": {str(k): counts[k] for k in sorted(counts)},
        }
    assert manifest["files"]["train_data_joint.npy"]["shape"] == [12, 3, 300, 25, 2]


def test_verify_finds_a_changed_byte_the_cheap_check_does_not(folder):
    assert mf.verify(folder) == [] and mf.quick_check(folder) == []
    path = folder / "val_data_joint.npy"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01  # one bit of one float, same size
    path.write_bytes(bytes(content))
    lines = mf.verify(folder)
    assert len(lines) == 1 and str(path) in lines[0] and "sha256" in lines[0]
    assert mf.quick_check(folder) == []  # sizes and headers only, by design


def test_cheap_check_finds_size_shape_missing_and_warns_once(folder):
    np.save(folder / "train_num_frame.npy", np.zeros(13, dtype=np.int64))  # one sample more
    (folder / "val_label.pkl").unlink()
    with pytest.warns(UserWarning, match="does not match its manifest.json") as caught:
        lines = mf.warn_if_mismatch(folder)
    assert len(caught) == 1 and "and 1 more" in str(caught[0].message)
    assert any("train_num_frame.npy: 232 bytes, manifest.json says 224" in line for line in lines)
    assert any("val_label.pkl: missing" in line for line in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.warn_if_mismatch(folder) == []  # once per folder per process


def test_cheap_check_compares_npy_headers(folder):
    path = folder / "train_num_frame.npy"
    frames = np.load(path)
    np.save(path, frames.astype(np.float64))  # same size (8 bytes each), other dtype
    lines = mf.quick_check(folder)
    assert len(lines) == 1 and "dtype float64" in lines[0] and "int64" in lines[0]


def test_no_manifest_is_silent_for_datasets_and_bad_input_for_verify(prepared, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(prepared, bare)
    (bare / "manifest.json").unlink()  # a folder prepared before manifests existed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.warn_if_mismatch(bare) == []
    assert manifest_cli.main(["verify", str(bare)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: no manifest" in err
    assert manifest_cli.main(["verify", str(tmp_path / "nowhere")]) == 2
    (bare / "manifest.json").write_text("{not json")
    assert manifest_cli.main(["verify", str(bare)]) == 2
    assert "not readable JSON" in capsys.readouterr().err


def test_cli_write_then_verify(prepared, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    (old / "manifest.json").unlink()
    assert manifest_cli.main(["write", str(old)]) == 0
    assert json.loads((old / "manifest.json").read_text())["tool"] == "data_gen/manifest.py write"
    assert manifest_cli.main(["verify", str(old)]) == 0
    assert "matches manifest.json" in capsys.readouterr().out
    (old / "extra.npy").write_bytes(b"x")
    with open(old / "train_data_joint.npy", "r+b") as f:
        f.truncate(1000)
    assert manifest_cli.main(["verify", str(old)]) == 1
    out = capsys.readouterr().out
    assert "train_data_joint.npy: 1000 bytes" in out and "extra.npy: not listed" in out and "2 mismatch(es)" in out


def test_label_pickles_are_read_without_running_code(prepared, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "xsub"
    shutil.copytree(prepared, folder)
    (folder / "train_label.pkl").write_bytes(pickle.dumps((["a"], [Payload()])))
    with pytest.raises(ValueError, match=r"refusing to load 'pathlib\.Path\.touch'; label files hold"):
        mf.write_manifest(folder, tool="t", arguments={})
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, line",
    [
        ({"shape": 16}, "has 'shape' 16, not a list of sizes"),
        ({"dtype": "evil"}, "has 'dtype' 'evil', not a NumPy dtype"),
        ([224], "is list, not an object"),
        ({"size": "224"}, "has 'size' '224', not a byte count"),
        ({"sha256": None}, "has 'sha256' None, not 64 hex digits"),  # the key removed
    ],
)
def test_malformed_entries_are_one_mismatch_line(folder, capsys, change, line):
    """A manifest edited by hand (or by another tool): one line in verify and in the datasets' check."""
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["files"]["train_num_frame.npy"]
    if isinstance(change, dict):
        entry.update(change)
        entry.pop("sha256") if entry["sha256"] is None else None
    else:
        manifest["files"]["train_num_frame.npy"] = change
    (folder / "manifest.json").write_text(json.dumps(manifest))
    expected = f"{folder / 'train_num_frame.npy'}: the manifest.json entry {line}"
    assert mf.quick_check(folder) == [expected]
    assert mf.verify(folder) == [expected]
    assert manifest_cli.main(["verify", str(folder)]) == 1
    assert capsys.readouterr().out.splitlines() == [expected, f"{folder}: 1 mismatch(es) with manifest.json"]
    with pytest.warns(UserWarning, match=re.escape(expected)):
        mf.warn_if_mismatch(folder)


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/hostname", ".hidden", "sub/x"])
def test_verify_reads_only_files_of_its_folder(folder, tmp_path, monkeypatch, name):
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"not part of the folder")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"size": 22, "sha256": hashlib.sha256(b"not part of the folder").hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    opened = []
    real = mf.sha256_of
    monkeypatch.setattr(mf, "sha256_of", lambda path: opened.append(path) or real(path))
    expected = f"{folder}: manifest.json lists {name!r}, which is not a file of this folder (not read)"
    assert mf.verify(folder) == [expected]
    assert all(path.parent == folder for path in opened) and len(opened) == 6


# ----------------------------------------------------------------------------------------------------
# written by the converters, read by the datasets


def test_data_gen_writes_a_manifest_that_verify_accepts(prepared, tmp_path, capsys):
    """ntu_gendata's split folders carry their manifest: every file, the class counts, what determines them."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["tool"] == "data_gen/ntu_gendata.py"
    raw = prepared.parents[2] / "raw"
    assert manifest["arguments"] == {
        "data_path": str(raw),
        "ignored_sample_path": None,
        "benchmarks": ["xsub", "xview"],
        "skip_bad": False,
        "num_actions": None,
    }
    assert sorted(manifest["files"]) == sorted(SPLIT_FILES)
    assert "created" not in manifest  # the same run elsewhere or later writes the same manifest
    for part in ("train", "val"):
        _, names, labels, _ = load_part(prepared, part)
        assert manifest["parts"][part]["samples"] == len(names) == len(labels)
    assert manifest["parts"]["train"]["samples"] + manifest["parts"]["val"]["samples"] == 24
    for benchmark in ("xsub", "xview"):
        assert mf.verify(prepared.parent / benchmark) == []
    copy = tmp_path / "xsub"
    shutil.copytree(prepared, copy)
    assert manifest_cli.main(["verify", str(copy)]) == 0
    path = copy / "train_data_joint.npy"
    with open(path, "r+b") as f:  # one byte of one coordinate, in place: same size, same header
        f.seek(path.stat().st_size - 1000)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    capsys.readouterr()
    assert manifest_cli.main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: sha256 " in out and "(same size: changed in place)" in out and "1 mismatch(es)" in out


def test_manifest_is_built_from_the_staged_folder_before_anything_is_moved(tmp_path, monkeypatch):
    """The manifest describes this run's complete files, staged in a folder of their own."""
    from data_gen import ntu_gendata, writer
    from data_gen.synthetic import write_synthetic_ntu

    raw = tmp_path / "raw"
    write_synthetic_ntu(raw, num_classes=4, samples_per_class=3, seed=5)
    out = tmp_path / "out"
    seen = []
    build = writer.build_manifest

    def recording(files, **kwargs):
        seen.append({name: Path(path) for name, path in files.items()})
        assert not (out / "xview").exists()  # nothing moved yet
        return build(files, **kwargs)

    monkeypatch.setattr(writer, "build_manifest", recording)
    ntu_gendata.generate(raw, out, None, ("xview",), progress=False)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(SPLIT_FILES)
    assert {path.parent.name for path in seen[0].values()} == {seen[0]["train_label.pkl"].parent.name}
    assert re.fullmatch(r"\.xview\.tmp-\d+-[0-9a-f]{8}", seen[0]["train_label.pkl"].parent.name)
    assert mf.verify(out / "xview") == []
    assert sorted(p.name for p in (out / "xview").iterdir()) == sorted([*SPLIT_FILES, "manifest.json"])
    assert sorted(p.name for p in out.iterdir()) == ["xview"]  # no staged folder, no lock left


def test_datasets_warn_once_when_a_file_no_longer_matches(folder, tmp_path):
    """Opening a dataset checks the folder against its manifest: silent when it matches; a truncated file
    of the folder gives one warning naming it and both sizes, once per folder."""
    from common.split_folder import DataFileError
    from feeders.datasets import DownstreamDataset, PretrainDataset

    paths = _paths(folder, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PretrainDataset(paths, "sequence")
    mf._WARNED.clear()
    cut = folder / "val_data_joint.npy"
    size = cut.stat().st_size
    with open(cut, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.warns(UserWarning) as caught:
        PretrainDataset(paths, "sequence")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(
        f"{folder} does not match its manifest.json: {cut}: {size - 1000} bytes, manifest.json says {size}"
    )
    assert message.endswith(f"; check with: python data_gen/manifest.py verify {folder}")
    assert caught[0].filename.endswith("feeders/datasets.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DownstreamDataset(paths, "sequence", train=True)  # the same folder: not again
    with pytest.raises(DataFileError, match="truncated"):
        DownstreamDataset(_paths(folder, "val"), "sequence", train=False)  # and the cut part itself fails


def _paths(folder: Path, part: str):
    from common.split_folder import part_paths

    return part_paths(folder, part)


def test_npy_header_of_a_file_and_of_a_stream(tmp_path):
    """One reader for the manifest, the datasets' size check and the npz members."""
    array = np.zeros((3, 4, 5), dtype="<f4")
    path = tmp_path / "a.npy"
    np.save(path, array)
    header = read_npy_header(path)
    assert (header.shape, header.dtype, header.fortran_order) == ((3, 4, 5), np.dtype("<f4"), False)
    assert header.offset == 128 and header.file_size == path.stat().st_size == 128 + 3 * 4 * 5 * 4
    with open(path, "rb") as f:
        assert read_npy_header(f) == header
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY\x03\x00" + path.read_bytes()[8:])
    with pytest.raises(ValueError, match=r"b\.npy: not a readable \.npy array \(unsupported \.npy version 3\.0\)$"):
        read_npy_header(tmp_path / "b.npy")
    (tmp_path / "c.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"^not a readable \.npy array \("):
        read_npy_header(io.BytesIO(b"not an array"))
    with pytest.raises(ValueError, match=r"c\.npy: not a readable \.npy array \("):
        read_npy_header(tmp_path / "c.npy")
    with pytest.raises(ValueError, match=r"missing\.npy: cannot be read \(No such file or directory\)$"):
        read_npy_header(tmp_path / "missing.npy")


def test_a_shipped_ignored_list_is_recorded_the_same_in_every_checkout(tmp_path):
    """The manifest names the official lists by their place in the project, not by this checkout's path."""
    from data_gen import ntu_gendata
    from data_gen.ntu_splits import DEFAULT_IGNORED_LISTS

    shipped = DEFAULT_IGNORED_LISTS["ntu60"]
    assert ntu_gendata._as_recorded(shipped) == "data_gen/resources/NTU_RGBD_samples_with_missing_skeletons.txt"
    own = tmp_path / "mine.txt"
    assert ntu_gendata._as_recorded(own) == str(own)
    assert ntu_gendata._as_recorded(None) is None
