"""scripts/ledger.py on generated trees of metrics JSON: exact means and deviations, the paper's figures,
runs the recipes expect but are absent, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine import ledger
from engine.ledger import RunKey
from scripts import ledger as ledger_cli

PAIR = "seq-based_and_graph-based"


def write_run(runs: Path, setting: str, protocol: str, encoder: str, seed: int, top1: float) -> Path:
    path = runs / setting / PAIR / protocol / encoder / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    field = "knn_top1" if protocol == "knn" else "top1"
    path.write_text(json.dumps({field: top1, "top5": 99.0}))
    return path


def write_pretraining(runs: Path, setting: str, loss: float = 5.4321) -> None:
    path = runs / setting / PAIR / "pretrain" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "completed", "epochs_completed": 451, "final": {"train_loss": loss}}))


def table_rows(text: str, section: str = "## Evaluation (top-1 %)", key_columns: int = 4) -> dict[tuple, list]:
    """Rows of one table of the ledger's Markdown, keyed by their first ``key_columns`` cells."""
    lines = text.split(section + "\n\n")[1].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {tuple(row[:key_columns]): row[key_columns:] for row in rows}


def test_mean_sample_deviation_and_difference_to_the_paper(tmp_path):
    runs = tmp_path / "runs"
    for seed, top1 in enumerate((71.3, 74.9, 70.1)):
        write_run(runs, "ntu60_cross_view", "linear", "seq-based", seed, top1)
    write_run(runs, "ntu60_cross_view", "knn", "seq-based", 0, 60.5)
    write_run(runs, "ntu60_cross_view", "semi_10pct", "seq-based", 3, 55.0)
    found, pretrainings = ledger.collect_runs(runs)
    assert found[RunKey("ntu60_cross_view", PAIR, "linear", "seq-based")] == {0: 71.3, 1: 74.9, 2: 70.1}
    assert pretrainings == {}
    mean = (71.3 + 74.9 + 70.1) / 3  # 72.1
    std = math.sqrt(((71.3 - mean) ** 2 + (74.9 - mean) ** 2 + (70.1 - mean) ** 2) / 2)  # 2.498
    rows = ledger.evaluation_rows(found, {}, ledger.load_paper(ledger.PAPER_RESULTS))
    assert rows == [
        [
            "ntu60_cross_view",
            PAIR,
            "linear",
            "seq-based",
            "85.2",
            f"{mean:.2f} ± {std:.2f}",
            "3 (not in the recipes)",
            f"{mean - 85.2:+.2f}",
        ],
        ["ntu60_cross_view", PAIR, "knn", "seq-based", "82.6", "60.50", "1 (not in the recipes)", "-22.10"],
        ["ntu60_cross_view", PAIR, "semi_10pct", "seq-based", "–", "55.00", "1 (not in the recipes)", "–"],
    ]
    assert rows[0][5] == "72.10 ± 2.50" and rows[0][7] == "-13.10"


def test_runs_the_recipes_expect_but_are_absent_are_flagged(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SEEDS", "0 1")
    monkeypatch.delenv("PRETRAIN_REPRESENTATION", raising=False)
    write_run(runs, "ntu60_cross_view", "linear", "seq-based", 0, 80.0)
    write_run(runs, "ntu60_cross_view", "linear", "seq-based", 1, 82.0)
    write_run(runs, "ntu60_cross_view", "knn", "seq-based", 0, 70.0)
    write_pretraining(runs, "ntu60_cross_view")
    assert ledger_cli.main([str(runs), "--out", str(tmp_path / "ledger.md")]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "ledger.md").read_text() == text
    rows = table_rows(text)
    assert rows[("ntu60_cross_view", PAIR, "linear", "seq-based")] == ["85.2", "81.00 ± 1.41", "2 of 2", "-4.20"]
    assert rows[("ntu60_cross_view", PAIR, "knn", "seq-based")] == ["82.6", "70.00", "1 of 2, 1 MISSING", "-12.60"]
    assert rows[("ntu60_cross_view", PAIR, "semi_1pct", "seq-based")] == ["–", "–", "0 of 5, 5 MISSING", "–"]
    assert rows[("pku2_cross_subject_from_ntu60_cross_subject", PAIR, "linear", "seq-based")][2] == "0 of 2, 2 MISSING"
    # The recipes: 11 linear and 4 x 4 semi-supervised classification rows, 8 KNN rows, 6 pretrainings;
    # only the complete linear row and the present pretraining are not missing.
    assert len(rows) == 11 + 16 + 8
    assert "## Missing runs (expected by the recipes, absent): 39" in text
    assert f"- ntu60_cross_view/{PAIR}/knn/seq-based/seed<N>/metrics.json: seeds 1" in text
    assert f"- ntu60_cross_subject/{PAIR}/semi_20pct/seq-based/seed<N>/metrics.json: seeds 0, 1, 2, 3, 4" in text
    assert f"- ntu120_cross_setup/{PAIR}/pretrain/metrics.json" in text
    assert f"- ntu60_cross_view/{PAIR}/pretrain/metrics.json" not in text
    assert table_rows(text, "## Pretraining", 2) == {("ntu60_cross_view", PAIR): ["completed", "451", "5.4321"]}


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
    assert len(expected) == 6 + 11 + 4 + 8


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not a readable JSON file"),
        (json.dumps({"top5": 90.0}), "field 'top1' must be a top-1 accuracy in [0, 100] (%), found None"),
        (json.dumps({"top1": "85"}), "field 'top1' must be a top-1 accuracy in [0, 100] (%), found '85'"),
        (json.dumps({"top1": 185.0}), "found 185.0"),
    ],
)
def test_a_bad_metrics_file_stops_with_one_line(tmp_path, capsys, content, message):
    runs = tmp_path / "runs"
    path = write_run(runs, "ntu60_cross_view", "linear", "seq-based", 0, 80.0)
    path.write_text(content)
    out = tmp_path / "ledger.md"
    assert ledger_cli.main([str(runs), "--no-recipes", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err
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


def test_a_bad_paper_file_or_missing_folder_exits_2(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"figures": [{"setting": "ntu60_cross_view", "top1": 85.2}]}))
    assert ledger_cli.main([str(tmp_path / "runs"), "--no-recipes", "--paper", str(paper)]) == 2
    assert "figures[0] must hold the strings setting, pretraining, protocol, encoder" in capsys.readouterr().err
    assert ledger_cli.main([str(tmp_path / "nowhere"), "--no-recipes"]) == 2
    assert "not a folder of runs" in capsys.readouterr().err


def test_markdown_table_aligns_columns():
    assert ledger.markdown_table(["a", "value"], [["x", "1.5"], ["long", "10.25"]], "lr") == (
        "| a    | value |\n| ---- | ----: |\n| x    |   1.5 |\n| long | 10.25 |"
    )
    with pytest.raises(ValueError):
        ledger.markdown_table(["a", "b"], [["only one"]])
