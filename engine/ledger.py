"""The results ledger: the recipes' metrics JSON tree as one Markdown table against the paper's figures.

The recipe scripts (``script_*.sh``, ``scripts/common.sh``) write one metrics JSON per run:

    RUNS_DIR/<setting>/<pretraining>/pretrain/metrics.json                        pretraining
    RUNS_DIR/<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/metrics.json    evaluation

e.g. ``ntu60_cross_view/seq-based_and_graph-based/linear/seq-based/seed0/metrics.json``; protocols are
``linear``, ``knn`` and ``semi_<P>pct`` (fine-tuning on P % of the labels). Each evaluation row of the
table gives the paper's figure (``scripts/paper_results.json``), our mean +- sample standard deviation
over seeds of the run's top-1 (``top1``; ``knn_top1`` for ``knn``), the number of runs and the
difference. Which runs to expect comes from the recipes themselves (their ``DRY_RUN=1 ... all`` command
lines); every expected run that is absent is flagged. The command line is ``scripts/ledger.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PAPER_RESULTS = ROOT / "scripts" / "paper_results.json"
RECIPES = ("script_pretrain.sh", "script_action_classification.sh", "script_action_retrieval.sh")
METRICS = "metrics.json"
PRETRAIN = "pretrain"
DASH = "–"


class LedgerError(ValueError):
    """Bad input: the message is one line naming the file, the field and what was expected."""


class RunKey(NamedTuple):
    """One row of the ledger; its runs differ only in their seed."""

    setting: str  # <dataset>_<protocol>, e.g. ntu60_cross_view (..._from_<source> for a transfer)
    pretraining: str  # the pretraining representation(s), e.g. seq-based_and_graph-based
    protocol: str  # linear, knn, semi_1pct, ...
    encoder: str  # the representation evaluated, e.g. seq-based


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` holds one letter per column, ``l`` or ``r`` (default: all left)."""
    rows = [list(map(str, row)) for row in rows]
    align = align or "l" * len(headers)
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError(f"every row and the alignment need {len(headers)} columns")
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align, strict=True)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(row) for row in rows)])


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerError(f"{path}: not a readable JSON file ({exc})") from None


def read_top1(path: Path, protocol: str) -> float:
    """The run's top-1 (%) from its metrics JSON: ``knn_top1`` for the knn protocol, else ``top1``."""
    field = "knn_top1" if protocol == "knn" else "top1"
    content = _read_json(path)
    value = content.get(field) if isinstance(content, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise LedgerError(f"{path}: field '{field}' must be a top-1 accuracy in [0, 100] (%), found {value!r}")
    return float(value)


def _seed(path: Path, part: str) -> int:
    match = re.fullmatch(r"seed(\d+)", part)
    if match is None:
        raise LedgerError(
            f"{path}: folder '{part}' must be seed<N> (RUNS_DIR/<setting>/<pretraining>/<protocol>/"
            f"<encoder>/seed<N>/{METRICS})"
        )
    return int(match.group(1))


def parse_run_path(runs_dir: Path, path: Path) -> tuple[RunKey, int | None]:
    """(row, seed) of a metrics file from its place in the tree; seed None for a pretraining run."""
    parts = path.relative_to(runs_dir).parts
    if len(parts) == 4 and parts[2] == PRETRAIN:
        return RunKey(parts[0], parts[1], PRETRAIN, ""), None
    if len(parts) == 6 and parts[2] != PRETRAIN:
        return RunKey(*parts[:4]), _seed(path, parts[4])
    raise LedgerError(
        f"{path}: a metrics file must lie at <setting>/<pretraining>/{PRETRAIN}/{METRICS} or "
        f"<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/{METRICS} under {runs_dir}"
    )


def collect_runs(runs_dir: Path) -> tuple[dict[RunKey, dict[int, float]], dict[RunKey, dict]]:
    """Evaluation runs {row: {seed: top-1}} and pretraining runs {row: metrics} found under ``runs_dir``."""
    if not runs_dir.is_dir():
        raise LedgerError(f"{runs_dir}: not a folder of runs (RUNS_ROOT of the recipe scripts)")
    runs: dict[RunKey, dict[int, float]] = {}
    pretrainings: dict[RunKey, dict] = {}
    for path in sorted(runs_dir.rglob(METRICS)):
        key, seed = parse_run_path(runs_dir, path)
        if seed is None:
            content = _read_json(path)
            if not isinstance(content, dict):
                raise LedgerError(f"{path}: expected a JSON object of pretraining metrics")
            pretrainings[key] = content
        else:
            runs.setdefault(key, {})[seed] = read_top1(path, key.protocol)
    return runs, pretrainings


def expected_runs(
    runs_dir: Path, env: Mapping[str, str] | None = None, root: Path = ROOT
) -> dict[RunKey, list[int | None]]:
    """The runs the recipes write under ``runs_dir``: {row: [seeds]} in recipe order (pretraining: [None])."""
    env = {**(os.environ if env is None else env), "DRY_RUN": "1", "RUNS_ROOT": str(runs_dir)}
    expected: dict[RunKey, list[int | None]] = {}
    for script in RECIPES:
        try:
            result = subprocess.run(
                ["bash", str(root / script), "all"],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LedgerError(f"{script}: could not list its runs ({exc}); pass --no-recipes") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise LedgerError(
                f"{script}: DRY_RUN=1 ... all failed (exit {result.returncode}: {last}); pass --no-recipes"
            )
        for line in result.stdout.splitlines():
            words = shlex.split(line)
            if "--metrics-json" in words:
                path = Path(os.path.normpath(words[words.index("--metrics-json") + 1]))
                key, seed = parse_run_path(Path(os.path.normpath(runs_dir)), path)
                expected.setdefault(key, []).append(seed)
    return expected


def load_paper(path: Path) -> dict[RunKey, float]:
    """{row: the paper's top-1} from the figures file."""
    content = _read_json(path)
    figures = content.get("figures") if isinstance(content, dict) else None
    if not isinstance(figures, list):
        raise LedgerError(f"{path}: field 'figures' must be a list of figures")
    paper = {}
    for i, entry in enumerate(figures):
        fields = RunKey._fields + ("top1",)
        if (
            not isinstance(entry, dict)
            or any(not isinstance(entry.get(f), str) for f in RunKey._fields)
            or isinstance(entry.get("top1"), bool)
            or not isinstance(entry.get("top1"), (int, float))
        ):
            raise LedgerError(
                f"{path}: figures[{i}] must hold the strings {', '.join(RunKey._fields)} "
                f"and the number top1 (fields {', '.join(fields)})"
            )
        paper[RunKey(*(entry[f] for f in RunKey._fields))] = float(entry["top1"])
    return paper


def summary(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None for a single run."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _protocol_rank(protocol: str) -> tuple[int, float, str]:
    if protocol in ("linear", "knn"):
        return (0 if protocol == "linear" else 1), 0.0, protocol
    match = re.fullmatch(r"semi_(\d+(?:\.\d+)?)pct", protocol)
    return (2, float(match.group(1)), protocol) if match else (3, 0.0, protocol)


def _ordered(keys: Iterable[RunKey], expected: Mapping[RunKey, object]) -> list[RunKey]:
    """Settings and encoders in recipe order (unexpected ones after), protocols linear, knn, semi by fraction."""
    keys = set(keys)
    settings = list(dict.fromkeys([k.setting for k in expected] + sorted(k.setting for k in keys)))
    encoders = list(dict.fromkeys([k.encoder for k in expected] + sorted(k.encoder for k in keys)))
    return sorted(
        keys,
        key=lambda k: (settings.index(k.setting), k.pretraining, _protocol_rank(k.protocol), encoders.index(k.encoder)),
    )


def _number(value: float | None, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def evaluation_rows(
    runs: Mapping[RunKey, Mapping[int, float]],
    expected: Mapping[RunKey, Sequence[int | None]],
    paper: Mapping[RunKey, float],
) -> list[list[str]]:
    """One row per (setting, pretraining, protocol, encoder) that was run or is expected."""
    keys = [k for k in (*runs, *expected) if k.protocol != PRETRAIN]
    rows = []
    for key in _ordered(keys, expected):
        seeds = runs.get(key, {})
        values = [seeds[s] for s in sorted(seeds)]
        mean, std = summary(values) if values else (None, None)
        ours = DASH if mean is None else _number(mean) + ("" if std is None else f" ± {std:.2f}")
        figure = paper.get(key)
        want = expected.get(key)
        if want is None:
            count = f"{len(values)} (not in the recipes)"
        else:
            missing = len([s for s in want if s not in seeds])
            extra = len([s for s in seeds if s not in want])
            count = (
                f"{len(values)} of {len(want)}"
                + (f", {missing} MISSING" if missing else "")
                + (f", {extra} not in the recipes" if extra else "")
            )
        difference = None if mean is None or figure is None else mean - figure
        rows.append(
            [
                key.setting,
                key.pretraining,
                key.protocol,
                key.encoder,
                DASH if figure is None else f"{figure:.1f}",
                ours,
                count,
                _number(difference, sign=True),
            ]
        )
    return rows


def missing_runs(
    runs: Mapping[RunKey, Mapping[int, float]],
    pretrainings: Mapping[RunKey, object],
    expected: Mapping[RunKey, Sequence[int | None]],
) -> list[str]:
    """'<row path>: seeds ...' (or the pretraining's path) for every expected run that is absent."""
    lines = []
    for key, seeds in expected.items():
        path = "/".join(part for part in key if part)
        if key.protocol == PRETRAIN:
            if key not in pretrainings:
                lines.append(f"{path}/{METRICS}")
            continue
        absent = [s for s in seeds if s not in runs.get(key, {})]
        if absent:
            lines.append(f"{path}/seed<N>/{METRICS}: seeds {', '.join(map(str, absent))}")
    return lines


def pretraining_rows(pretrainings: Mapping[RunKey, Mapping], expected: Mapping[RunKey, object]) -> list[list[str]]:
    """Status, epochs and final loss of each pretraining run found."""
    rows = []
    for key in _ordered(pretrainings, expected):
        metrics = pretrainings[key]
        final = metrics.get("final") if isinstance(metrics.get("final"), dict) else {}
        loss = final.get("train_loss")
        rows.append(
            [
                key.setting,
                key.pretraining,
                str(metrics.get("status", DASH)),
                str(metrics.get("epochs_completed", DASH)),
                f"{loss:.4f}" if isinstance(loss, (int, float)) else DASH,
            ]
        )
    return rows


def format_ledger(
    runs: Mapping[RunKey, Mapping[int, float]],
    pretrainings: Mapping[RunKey, Mapping],
    expected: Mapping[RunKey, Sequence[int | None]],
    paper: Mapping[RunKey, float],
) -> str:
    """The whole ledger as Markdown: evaluation table, pretraining runs, missing runs."""
    parts = [
        "## Evaluation (top-1 %)",
        "",
        markdown_table(
            ["setting", "pretraining", "protocol", "encoder", "paper", "ours (mean ± std)", "runs", "ours - paper"],
            evaluation_rows(runs, expected, paper),
            "llllrrrr",
        ),
    ]
    if pretrainings:
        parts += [
            "",
            "## Pretraining",
            "",
            markdown_table(
                ["setting", "pretraining", "status", "epochs", "final loss"],
                pretraining_rows(pretrainings, expected),
                "lllrr",
            ),
        ]
    missing = missing_runs(runs, pretrainings, expected)
    parts += ["", f"## Missing runs (expected by the recipes, absent): {len(missing)}"]
    if missing:
        parts += [""] + [f"- {line}" for line in missing]
    return "\n".join(parts) + "\n"
