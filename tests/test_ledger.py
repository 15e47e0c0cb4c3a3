"""scripts/ledger.py on generated trees of metrics JSON: exact means and deviations, the best and final
epoch, which figure of ours meets the paper's, versions from the provenance blocks (rows mixing code,
data or checkpoint flagged), runs the recipes expect but are absent, and bad input (one line, exit 2,
checked before any work, nothing written)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from engine import ledger
from engine.ledger import RunKey
from scripts import ledger as ledger_cli

PAIR = "seq-based_and_graph-based"
PAPER = ledger.load_paper(ledger.PAPER_RESULTS)


def provenance(commit: str = "a", dirty: bool = False, data: str = "d", pretrained: str | None = "c") -> dict:
    """A provenance block of engine/provenance.py's shape; one letter stands for a whole digest."""
    checkpoints = {} if pretrained is None else {"--pretrained": {"path": "/c/p.pth.tar", "sha256": pretrained * 64}}
    return {
        "code": {"commit": commit * 40, "dirty": dirty},
        "data": {"/data/NTU-RGB-D-60-AGCN/xview": data * 64},
        "checkpoints": checkpoints,
        "torch": "2.13.0+cpu",
        "numpy": "2.3.0",
        "python": "3.12.3",
        "device": "cpu",
        "world_size": 1,
    }


def write_run(runs: Path, setting: str, protocol: str, encoder: str, seed: int, top1: float, **fields) -> Path:
    path = runs / setting / PAIR / protocol / encoder / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    field = "knn_top1" if protocol == "knn" else "top1"
    path.write_text(json.dumps({field: top1, "top5": 99.0, "provenance": provenance(), **fields}))
    return path


def write_pretraining(runs: Path, setting: str, loss: float = 5.4321) -> None:
    path = runs / setting / PAIR / "pretrain" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"status": "completed", "epochs_completed": 451, "final": {"train_loss": loss}}
    path.write_text(json.dumps({**metrics, "provenance": provenance(pretrained=None)}))


def table_rows(text: str, section: str = "## Evaluation (top-1 %)", key_columns: int = 4) -> dict[tuple, list]:
    """Rows of one table of the ledger's Markdown, keyed by their first ``key_columns`` cells."""
    lines = text.split(section + "\n\n")[1].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {tuple(row[:key_columns]): row[key_columns:] for row in rows}


def test_mean_deviation_best_and_final_epoch_and_the_difference_to_the_paper(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, (top1, final) in enumerate(((71.3, 70.0), (74.9, 74.9), (70.1, 66.2))):
        write_run(runs, "ntu60_cross_view", "linear", "seq-based", seed, top1, final_top1=final)
    # The paper's KNN figure meets ours without the auto-encoder, never the auto-encoder's.
    write_run(runs, "ntu60_cross_view", "knn", "seq-based", 0, 60.5, knn_top1_autoencoder=80.0)
    write_run(runs, "ntu60_cross_view", "semi_10pct", "seq-based", 3, 55.0, final_top1=None)
    found = ledger.collect_runs(runs, PAPER)
    assert {s: r.figure for s, r in found[RunKey("ntu60_cross_view", PAIR, "linear", "seq-based")].items()} == {
        0: 71.3,
        1: 74.9,
        2: 70.1,
    }
    assert ledger_cli.main([str(runs), "--no-recipes"]) == 0
    text = capsys.readouterr().out
    mean = (71.3 + 74.9 + 70.1) / 3  # 72.1
    std = math.sqrt(((71.3 - mean) ** 2 + (74.9 - mean) ** 2 + (70.1 - mean) ** 2) / 2)  # 2.498
    final_mean = (70.0 + 74.9 + 66.2) / 3  # 70.37
    final_std = math.sqrt(((70.0 - final_mean) ** 2 + (74.9 - final_mean) ** 2 + (66.2 - final_mean) ** 2) / 2)
    assert table_rows(text) == {
        ("ntu60_cross_view", PAIR, "linear", "seq-based"): [
            "85.2",
            f"{mean:.2f} ± {std:.2f}",
            f"{final_mean:.2f} ± {final_std:.2f}",
            "3",
            f"{mean - 85.2:+.2f}",
            "v1",
        ],
        ("ntu60_cross_view", PAIR, "knn", "seq-based"): ["82.6", "60.50", "–", "1", "-22.10", "v1"],
        ("ntu60_cross_view", PAIR, "semi_10pct", "seq-based"): ["–", "55.00", "–", "1", "–", "v1"],
    }
    assert f"{mean:.2f} ± {std:.2f}" == "72.10 ± 2.50" and f"{final_mean:.2f} ± {final_std:.2f}" == "70.37 ± 4.36"
    # Without recipes nothing is expected: neither "(not in the recipes)" nor a count of missing runs.
    assert "not in the recipes" not in text and "MISSING" not in text
    assert "`top1` for classification rows, the best epoch's top-1 on the test split" in text
    assert "`knn_top1` for knn rows, KNN on the encoder's features without the auto-encoder" in text
    assert "`final epoch` is `final_top1`" in text


def test_versions_group_runs_and_flag_rows_that_mix_code_data_or_checkpoint(tmp_path, capsys):
    runs = tmp_path / "runs"
    setting = "ntu60_cross_subject"
    write_run(runs, setting, "linear", "seq-based", 0, 70.0)
    write_run(runs, setting, "linear", "seq-based", 1, 71.0, provenance=provenance(commit="b", data="e"))
    write_run(runs, setting, "linear", "graph-based", 0, 60.0, provenance=provenance(pretrained="f"))
    write_run(runs, setting, "linear", "graph-based", 1, 61.0)
    write_run(runs, setting, "knn", "seq-based", 0, 50.0, provenance=provenance(dirty=True))  # one run: no mix
    path = write_run(runs, setting, "knn", "graph-based", 0, 40.0)
    path.write_text(json.dumps({"knn_top1": 40.0}))  # written before provenance existed
    write_run(runs, setting, "knn", "graph-based", 1, 41.0)
    assert ledger_cli.main([str(runs), "--no-recipes"]) == 0
    text = capsys.readouterr().out
    versions = {key[2:]: row[-1] for key, row in table_rows(text).items()}
    # Labels in table order (encoders sorted without recipes: graph-based first).
    assert versions == {
        ("linear", "graph-based"): "v1 v2: MIXED checkpoint",
        ("linear", "seq-based"): "v2 v3: MIXED code, MIXED data",
        ("knn", "graph-based"): "v2: 1 WITHOUT PROVENANCE",
        ("knn", "seq-based"): "v4",
    }
    listed = table_rows(text, "## Versions", 1)
    assert listed[("v2",)] == ["a" * 12, "d" * 12, "c" * 12, "torch 2.13.0+cpu, NumPy 2.3.0, cpu x 1"]
    assert listed[("v1",)][:3] == ["a" * 12, "d" * 12, "f" * 12]
    assert listed[("v3",)][:3] == ["b" * 12, "e" * 12, "c" * 12]
    assert listed[("v4",)][0] == "a" * 12 + "-dirty" and len(listed) == 4


def test_runs_the_recipes_expect_but_are_absent_are_flagged(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SEEDS", "0 1")
    monkeypatch.delenv("PRETRAIN_REPRESENTATION", raising=False)
    write_run(runs, "ntu60_cross_view", "linear", "seq-based", 0, 80.0, final_top1=79.0)
    write_run(runs, "ntu60_cross_view", "linear", "seq-based", 1, 82.0, final_top1=81.0)
    write_run(runs, "ntu60_cross_view", "knn", "seq-based", 0, 70.0)
    write_run(runs, "ntu60_cross_view", "knn", "graph-based", 7, 60.0)  # a seed the recipes do not run
    write_pretraining(runs, "ntu60_cross_view")
    assert ledger_cli.main([str(runs), "--out", str(tmp_path / "ledger.md")]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "ledger.md").read_text() == text
    rows = table_rows(text)
    assert rows[("ntu60_cross_view", PAIR, "linear", "seq-based")] == [
        "85.2",
        "81.00 ± 1.41",
        "80.00 ± 1.41",
        "2 of 2",
        "-4.20",
        "v2",
    ]
    assert rows[("ntu60_cross_view", PAIR, "knn", "seq-based")][3:5] == ["1 of 2, MISSING seeds 1", "-12.60"]
    extra = "1 of 2, MISSING seeds 0 1, 1 not in the recipes"
    assert rows[("ntu60_cross_view", PAIR, "knn", "graph-based")][3] == extra
    assert rows[("ntu60_cross_view", PAIR, "semi_1pct", "seq-based")] == [
        "–",
        "–",
        "–",
        "0 of 5, MISSING seeds 0 1 2 3 4",
        "–",
        "–",
    ]
    transfer = "pku2_cross_subject_from_ntu60_cross_subject"
    assert rows[(transfer, PAIR, "finetune", "seq-based")][3] == "0 of 2, MISSING seeds 0 1"
    assert rows[(transfer, PAIR, "linear", "seq-based")][3] == "0 of 2, MISSING seeds 0 1"
    # The recipes: 11 linear, 1 fine-tuned transfer and 4 x 4 semi-supervised classification rows, 8 KNN
    # rows, 6 pretrainings. Runs: 2 seeds x (11 + 1 + 8) + 5 seeds x 16 + 6 pretrainings = 126, 4 present.
    assert len(rows) == 11 + 1 + 16 + 8
    assert text.endswith("\n\nRuns the recipes expect that are MISSING: 122\n")
    pretraining = table_rows(text, "## Pretraining", 2)
    assert pretraining[("ntu60_cross_view", PAIR)] == ["completed", "451", "5.4321", "v1"]
    assert pretraining[("ntu120_cross_setup", PAIR)] == ["MISSING", "–", "–", "–"] and len(pretraining) == 6


def test_expected_runs_follow_the_recipes_environment(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "SEEDS": "3",
        "SEMI_SEEDS": "7",
        "LABEL_FRACTIONS": "0.5",
        "PRETRAIN_REPRESENTATION": "seq-based_and_image-based",
        "REPRESENTATION": "seq-based_and_image-based",
    }
    expected = ledger.expected_runs(tmp_path / "runs", env=env)
    key = RunKey("ntu60_cross_view", "seq-based_and_image-based", "semi_50pct", "seq-based")
    assert expected[key] == [7]
    assert expected[RunKey("ntu120_cross_subject", "seq-based_and_image-based", "knn", "graph-based")] == [3]
    assert expected[RunKey("pku1_cross_subject", "seq-based_and_image-based", "pretrain", "")] == [None]
    assert len(expected) == 6 + 12 + 4 + 8


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not a readable JSON file"),
        (json.dumps({"top5": 90.0}), "field 'top1' must be a top-1 accuracy in [0, 100] (%), found None"),
        (json.dumps({"top1": "85"}), "field 'top1' must be a top-1 accuracy in [0, 100] (%), found '85'"),
        (json.dumps({"top1": 185.0}), "found 185.0"),
        (json.dumps({"top1": 85.0, "final_top1": float("nan")}), "field 'final_top1' must be a top-1 accuracy"),
        (json.dumps({"top1": 85.0, "provenance": {"code": "abc"}}), "field 'provenance' must be the block"),
        (json.dumps([85.0]), "expected a JSON object of metrics"),
    ],
)
def test_a_bad_metrics_file_stops_with_one_line(tmp_path, capsys, content, message):
    runs = tmp_path / "runs"
    path = write_run(runs, "ntu60_cross_view", "linear", "seq-based", 0, 80.0)
    path.write_text(content)
    out = tmp_path / "ledger.md"
    assert ledger_cli.main([str(runs), "--no-recipes", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ledger.py: error: {path}: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "relative", ["ntu60_cross_view/metrics.json", f"ntu60_cross_view/{PAIR}/linear/seq-based/run0/metrics.json"]
)
def test_a_metrics_file_out_of_place_is_refused(tmp_path, capsys, relative):
    path = tmp_path / "runs" / relative
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"top1": 50.0}))
    assert ledger_cli.main([str(tmp_path / "runs"), "--no-recipes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "seed<N>" in err


@pytest.mark.parametrize("kind", ["folder", "fifo", "broken link"])
def test_a_metrics_file_that_is_not_a_regular_file_is_one_line(tmp_path, capsys, kind):
    path = write_run(tmp_path / "runs", "ntu60_cross_view", "linear", "seq-based", 0, 80.0)
    path.unlink()
    {"folder": path.mkdir, "fifo": lambda: os.mkfifo(path), "broken link": lambda: path.symlink_to("gone")}[kind]()
    assert ledger_cli.main([str(tmp_path / "runs"), "--no-recipes"]) == 2  # a FIFO is never opened
    assert capsys.readouterr().err == f"ledger.py: error: {path}: not a regular file\n"


def test_a_bad_paper_file_or_missing_folder_exits_2(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    content = json.loads(ledger.PAPER_RESULTS.read_text())
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({**content, "figures": [{"setting": "ntu60_cross_view", "top1": 85.2}]}))
    assert ledger_cli.main([str(tmp_path / "runs"), "--no-recipes", "--paper", str(paper)]) == 2
    assert "figures[0] must hold the strings setting, pretraining, protocol, encoder" in capsys.readouterr().err
    del content["compared"]["knn"]
    paper.write_text(json.dumps(content))
    assert ledger_cli.main([str(tmp_path / "runs"), "--no-recipes", "--paper", str(paper)]) == 2
    assert "field 'compared' must give classification and knn each a 'field'" in capsys.readouterr().err
    assert ledger_cli.main([str(tmp_path / "nowhere"), "--no-recipes"]) == 2
    assert "not a folder of runs" in capsys.readouterr().err


def test_an_output_path_that_cannot_be_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    nowhere = tmp_path / "no runs here"  # reading the runs would fail too: the output is checked first
    assert ledger_cli.main([str(nowhere), "--out", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err == f"ledger.py: error: --out {tmp_path / 'folder'} is a folder; give a file name\n"
    assert ledger_cli.main([str(nowhere), "--out", str(tmp_path / "file" / "x.md")]) == 2
    assert f"{tmp_path / 'file'} is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"] and not any((tmp_path / "folder").iterdir())


def test_markdown_table_aligns_columns():
    assert ledger.markdown_table(["a", "value"], [["x", "1.5"], ["long", "10.25"]], "lr") == (
        "| a    | value |\n| ---- | ----: |\n| x    |   1.5 |\n| long | 10.25 |"
    )
