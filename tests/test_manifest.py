"""manifest.json: what it records, a changed byte found by verify, the cheap check the datasets run, the CLI."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_gen import manifest as mf
from tests.test_ctrgcn_npz import SPLIT_FILES, load_part, make_prepared_root


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
        assert manifest["parts"][part] == {"samples": len(labels),
                                           "class_counts": {str(k): counts[k] for k in sorted(counts)}}
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.warn_if_mismatch(bare) == []
    assert mf.main(["verify", str(bare)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: no manifest" in err
    assert mf.main(["verify", str(tmp_path / "nowhere")]) == 2
    (bare / "manifest.json").write_text("{not json")
    assert mf.main(["verify", str(bare)]) == 2
    assert "not readable JSON" in capsys.readouterr().err


def test_cli_write_then_verify(prepared, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    assert mf.main(["write", str(old)]) == 0
    assert json.loads((old / "manifest.json").read_text())["tool"] == "data_gen/manifest.py write"
    assert mf.main(["verify", str(old)]) == 0
    assert "matches manifest.json" in capsys.readouterr().out
    (old / "extra.npy").write_bytes(b"x")
    with open(old / "train_data_joint.npy", "r+b") as f:
        f.truncate(1000)
    assert mf.main(["verify", str(old)]) == 1
    out = capsys.readouterr().out
    assert "train_data_joint.npy: 1000 bytes" in out and "extra.npy: not listed" in out and "2 mismatch(es)" in out


def test_label_pickles_are_read_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "train_label.pkl"
    path.write_bytes(pickle.dumps((["a"], [Payload()])))
    with pytest.raises(mf.ManifestError, match="refusing to load pathlib"):
        mf.load_labels(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps((["a", "b"], [np.int64(3), 4])))  # numpy scalars are plain data
    assert mf.load_labels(path) == (["a", "b"], [3, 4])
