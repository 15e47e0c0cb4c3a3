"""engine.provenance: the code, data, checkpoint and machine a metrics JSON records."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import torch

from common.manifest import project_version
from engine.provenance import data_digest, provenance

ROOT = Path(__file__).resolve().parents[1]


def test_provenance_names_the_commit_the_data_and_the_checkpoint(tmp_path):
    folder = tmp_path / "xsub"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": {}}\n')
    checkpoint = tmp_path / "c.pth.tar"
    torch.save({"w": torch.arange(3)}, checkpoint)
    found = provenance(
        device="cpu",
        world_size=2,
        data_folders=[folder, folder, tmp_path],
        checkpoints={"--pretrained": checkpoint, "--resume": ""},
    )
    assert found["data"] == {str(folder): hashlib.sha256(b'{"files": {}}\n').hexdigest(), str(tmp_path): None}
    assert found["checkpoints"] == {
        "--pretrained": {"path": str(checkpoint), "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    }
    assert (found["torch"], found["numpy"], found["device"], found["world_size"]) == (
        torch.__version__,
        np.__version__,
        "cpu",
        2,
    )
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI clones one)
        assert found["code"]["commit"] == head.stdout.strip()
        assert isinstance(found["code"]["dirty"], bool)
        assert project_version() == head.stdout.strip()[:12] + ("-dirty" if found["code"]["dirty"] else "")
    assert data_digest(tmp_path / "absent") is None
