"""The results ledger: the recipes' metrics JSON (``RUNS_DIR/<setting>/<pretraining>/pretrain/metrics.json``,
``RUNS_DIR/<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/metrics.json``) as Markdown tables against
the paper's figures. What the tables hold: docs/recipes.md; which field of ours meets each figure of the
paper, and why: ``scripts/paper_results.json``. The command line is ``scripts/ledger.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from common.io import UsageError
from common.manifest import project_version

ROOT = Path(__file__).resolve().parents[1]
PAPER_RESULTS = ROOT / "scripts" / "paper_results.json"
RECIPES = ("script_pretrain.sh", "script_action_classification.sh", "script_action_retrieval.sh")
METRICS, PRETRAIN, KNN, DASH = "metrics.json", "pretrain", "knn", "–"
KINDS = ("classification", KNN)  # how a row's figure is read: knn rows, and every other protocol


class RunKey(NamedTuple):
    """One row of the ledger; its runs differ only in their seed."""

    setting: str  # <dataset>_<protocol>, e.g. ntu60_cross_view (..._from_<source> for a transfer)
    pretraining: str  # the pretraining representation(s), e.g. seq-based_and_graph-based
    protocol: str  # pretrain, linear, knn, finetune, semi_1pct, ...
    encoder: str  # the representation evaluated ('' for pretraining)


class Version(NamedTuple):
    """What produced a run, from its provenance block (digests shortened to 12 hex digits)."""

    code: str  # the commit, '-dirty' with uncommitted changes; 'unknown' outside a checkout
    data: str  # the manifest digest of every split read, '+'-joined
    checkpoint: str  # the --pretrained file's digest
    setup: str  # torch and NumPy versions, device and process count


MIXED = Version._fields[:3]  # what the runs of one row must share


class Run(NamedTuple):
    figure: float | None  # the field compared with the paper (None for pretraining)
    final: float | None  # classification: the final epoch's top-1
    version: Version | None  # None: the file has no provenance block
    metrics: dict[str, Any]


class Paper(NamedTuple):
    figures: dict[RunKey, float]
    compared: dict[str, dict[str, str]]  # kind -> {"field": ..., "figure": what it is, "evidence": ...}
    path: Path


Runs = Mapping[RunKey, Mapping[int | None, Run]]  # {row: {seed: run}}; a pretraining's seed is None
Expected = Mapping[RunKey, Sequence[int | None]]  # {row: the seeds the recipes run}


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` holds one letter per column, ``l`` or ``r`` (default: all left)."""
    rows, align = [list(map(str, row)) for row in rows], align or "l" * len(headers)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, align, strict=True)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(row) for row in rows)])


def _read_json(path: Path) -> Any:
    if not path.is_file():  # a folder, a broken link, a FIFO (reading one would wait forever)
        raise UsageError(f"{path}: not a regular file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None


def _accuracy(path: Path, metrics: Mapping[str, Any], field: str, required: bool = True) -> float | None:
    value = metrics.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise UsageError(f"{path}: field '{field}' must be a top-1 accuracy in [0, 100] (%), found {value!r}")
    return float(value)


def read_version(path: Path, metrics: Mapping[str, Any]) -> Version | None:
    """The run's :class:`Version`, or None when its metrics carry no provenance block."""
    block = metrics.get("provenance")
    if block is None:
        return None
    try:
        pretrained = block["checkpoints"].get("--pretrained")
        return Version(
            project_version(block["code"]),
            "+".join("no manifest" if d is None else d[:12] for d in sorted(block["data"].values(), key=str)) or DASH,
            DASH if pretrained is None else pretrained["sha256"][:12],
            f"torch {block['torch']}, NumPy {block['numpy']}, {block['device']} x {block['world_size']}",
        )
    except (KeyError, TypeError, AttributeError):
        fields = "code.commit, code.dirty, data, checkpoints, torch, numpy, device, world_size"
        raise UsageError(
            f"{path}: field 'provenance' must be the block engine/provenance.py writes ({fields})"
        ) from None


def read_run(path: Path, protocol: str, paper: Paper) -> Run:
    """One metrics file: its compared figure (and final epoch's top-1), its version, its content."""
    metrics = _read_json(path)
    if not isinstance(metrics, dict):
        raise UsageError(f"{path}: expected a JSON object of metrics")
    version = read_version(path, metrics)
    if protocol == PRETRAIN:
        return Run(None, None, version, metrics)
    field = paper.compared[KNN if protocol == KNN else "classification"]["field"]
    final = None if protocol == KNN else _accuracy(path, metrics, "final_top1", required=False)
    return Run(_accuracy(path, metrics, field), final, version, metrics)


def parse_run_path(runs_dir: Path, path: Path) -> tuple[RunKey, int | None]:
    """(row, seed) of a metrics file from its place in the tree; seed None for a pretraining run."""
    parts = path.relative_to(runs_dir).parts
    if len(parts) == 4 and parts[2] == PRETRAIN:
        return RunKey(parts[0], parts[1], PRETRAIN, ""), None
    seed = re.fullmatch(r"seed(\d+)", parts[4]) if len(parts) == 6 and parts[2] != PRETRAIN else None
    if seed is None:
        raise UsageError(
            f"{path}: a metrics file must lie at <setting>/<pretraining>/{PRETRAIN}/{METRICS} or "
            f"<setting>/<pretraining>/<protocol>/<encoder>/seed<N>/{METRICS} under {runs_dir}"
        )
    return RunKey(*parts[:4]), int(seed.group(1))


def collect_runs(runs_dir: Path, paper: Paper) -> dict[RunKey, dict[int | None, Run]]:
    """Every run under ``runs_dir``: {row: {seed: run}} (a pretraining's seed is None)."""
    if not runs_dir.is_dir():
        raise UsageError(f"{runs_dir}: not a folder of runs (RUNS_ROOT of the recipe scripts)")
    runs: dict[RunKey, dict[int | None, Run]] = {}
    # os.walk, not rglob: a broken link or a folder named metrics.json must be an error, not skipped
    for path in sorted(Path(folder) / METRICS for folder, dirs, files in os.walk(runs_dir) if METRICS in dirs + files):
        key, seed = parse_run_path(runs_dir, path)
        runs.setdefault(key, {})[seed] = read_run(path, key.protocol, paper)
    return runs


def expected_runs(runs_dir: Path, env: Mapping[str, str] | None = None) -> dict[RunKey, list[int | None]]:
    """The runs the recipes write under ``runs_dir``: {row: [seeds]} in recipe order (pretraining: [None])."""
    env = {**(os.environ if env is None else env), "DRY_RUN": "1", "RUNS_ROOT": str(runs_dir)}
    expected: dict[RunKey, list[int | None]] = {}
    for script in RECIPES:
        result = subprocess.run(["bash", str(ROOT / script), "all"], cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UsageError(
                f"{script}: DRY_RUN=1 ... all failed (exit {result.returncode}: {last}); pass --no-recipes"
            )
        for words in map(shlex.split, result.stdout.splitlines()):
            if "--metrics-json" in words:
                path = Path(os.path.normpath(words[words.index("--metrics-json") + 1]))
                key, seed = parse_run_path(Path(os.path.normpath(runs_dir)), path)
                expected.setdefault(key, []).append(seed)
    return expected


def _holds(entry: object, strings: Sequence[str]) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(field), str) for field in strings)


def load_paper(path: Path) -> Paper:
    """The paper's figures and, per kind of protocol, which field of ours each is compared with."""
    content = _read_json(path)
    figures, compared = (content.get(k) if isinstance(content, dict) else None for k in ("figures", "compared"))
    if not isinstance(compared, dict) or not all(_holds(compared.get(k), ("field", "figure")) for k in KINDS):
        raise UsageError(f"{path}: field 'compared' must give classification and knn each a 'field' and a 'figure'")
    if not isinstance(figures, list):
        raise UsageError(f"{path}: field 'figures' must be a list of figures")
    paper = {}
    for i, entry in enumerate(figures):
        top1 = entry.get("top1") if isinstance(entry, dict) else None
        if not _holds(entry, RunKey._fields) or isinstance(top1, bool) or not isinstance(top1, (int, float)):
            raise UsageError(
                f"{path}: figures[{i}] must hold the strings {', '.join(RunKey._fields)} and the number top1"
            )
        paper[RunKey(*(entry[f] for f in RunKey._fields))] = float(top1)
    return Paper(paper, compared, path)


def _spread(values: Iterable[float | None]) -> tuple[str, float | None]:
    """'mean ± sample standard deviation' (or the one value, or a dash) and the mean."""
    values = [v for v in values if v is not None]
    if not values:
        return DASH, None
    mean = statistics.fmean(values)
    return f"{mean:.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""), mean


def _protocol_rank(protocol: str) -> tuple[int, float, str]:
    if protocol in (PRETRAIN, "linear", KNN):
        return (PRETRAIN, "linear", KNN).index(protocol), 0.0, protocol
    semi = re.fullmatch(r"semi_(\d+(?:\.\d+)?)pct", protocol)
    return (4, float(semi.group(1)), protocol) if semi else (3, 0.0, protocol)


def ordered(keys: Iterable[RunKey], expected: Expected) -> list[RunKey]:
    """Settings and encoders in recipe order (unexpected ones after), protocols pretrain, linear, knn,
    finetune, then semi-supervised by label fraction."""
    keys = set(keys)
    settings = list(dict.fromkeys([k.setting for k in expected] + sorted(k.setting for k in keys)))
    encoders = list(dict.fromkeys([k.encoder for k in expected] + sorted(k.encoder for k in keys)))
    rank = {
        k: (settings.index(k.setting), k.pretraining, _protocol_rank(k.protocol), encoders.index(k.encoder))
        for k in keys
    }
    return sorted(keys, key=rank.__getitem__)


def _count(found: Mapping[int | None, Run], want: Sequence[int | None] | None, asked: bool) -> str:
    """'3'; with the recipes asked, '3 (not in the recipes)' or '2 of 5, MISSING seeds 0 3 4' (and how many
    runs have a seed the recipes do not run)."""
    if not asked or want is None:
        return f"{len(found)}" + (" (not in the recipes)" if asked else "")
    absent, extra = " ".join(str(s) for s in want if s not in found), len([s for s in found if s not in want])
    notes = ([f"MISSING seeds {absent}"] if absent else []) + ([f"{extra} not in the recipes"] if extra else [])
    return ", ".join([f"{len(found)} of {len(want)}", *notes])


def _versions(runs: Iterable[Run], labels: Mapping[Version, str]) -> str:
    """The row's version labels, then what its runs mix (code, data, checkpoint) or lack (provenance)."""
    versions = [run.version for run in runs]
    known = [v for v in versions if v is not None]
    flags = [f"MIXED {part}" for part in MIXED if len({getattr(v, part) for v in known}) > 1]
    flags += [f"{versions.count(None)} WITHOUT PROVENANCE"] * (None in versions)
    return ": ".join(filter(None, [" ".join(dict.fromkeys(labels[v] for v in known)), ", ".join(flags)])) or DASH


def evaluation_rows(runs: Runs, expected: Expected | None, paper: Paper, labels: Mapping[Version, str]) -> list[list]:
    """One row per (setting, pretraining, protocol, encoder) that was run or is expected."""
    rows = []
    for key in ordered([k for k in (*runs, *(expected or {})) if k.protocol != PRETRAIN], expected or {}):
        found = [runs.get(key, {})[s] for s in sorted(runs.get(key, {}))]
        ours, mean = _spread(run.figure for run in found)
        final = DASH if key.protocol == KNN else _spread(run.final for run in found)[0]
        count = _count(runs.get(key, {}), (expected or {}).get(key), expected is not None)
        figure = paper.figures.get(key)
        difference = DASH if mean is None or figure is None else f"{mean - figure:+.2f}"
        figure = DASH if figure is None else f"{figure:.1f}"
        rows.append([*key, figure, ours, final, count, difference, _versions(found, labels)])
    return rows


def pretraining_rows(runs: Runs, expected: Expected, labels: Mapping[Version, str]) -> list[list[str]]:
    """Status, epochs, final loss and version of each pretraining run found, or MISSING."""
    rows = []
    for key in ordered([k for k in (*runs, *expected) if k.protocol == PRETRAIN], expected):
        run = runs.get(key, {}).get(None)
        metrics = {"status": "MISSING"} if run is None else run.metrics
        final = metrics.get("final") if isinstance(metrics.get("final"), dict) else {}
        loss = f"{final['train_loss']:.4f}" if isinstance(final.get("train_loss"), float) else DASH
        status, epochs = (str(metrics.get(k, DASH)) for k in ("status", "epochs_completed"))
        rows.append(
            [key.setting, key.pretraining, status, epochs, loss, DASH if run is None else _versions([run], labels)]
        )
    return rows


def format_ledger(runs: Runs, expected: Expected | None, paper: Paper) -> str:
    """The whole ledger as Markdown: evaluation, pretraining, versions and (recipes asked) the missing runs."""
    labels: dict[Version, str] = {}  # v1, v2 ... in the order of the tables
    for key in ordered(runs, expected or {}):
        for seed in sorted(runs[key], key=lambda s: -1 if s is None else s):
            if runs[key][seed].version is not None:
                labels.setdefault(runs[key][seed].version, f"v{len(labels) + 1}")
    knn, classification = paper.compared[KNN], paper.compared["classification"]
    headers = [*RunKey._fields, "paper", "ours (mean ± std)", "final epoch", "runs", "ours - paper", "versions"]
    table = markdown_table(headers, evaluation_rows(runs, expected, paper, labels), "llllrrrrrl")
    parts = ["## Evaluation (top-1 %)", "", table, ""]
    parts += [
        f"`ours` is `{classification['field']}` for classification rows, {classification['figure']}, and "
        f"`{knn['field']}` for knn rows, {knn['figure']} (the evidence: `compared` in {paper.path}). "
        "`final epoch` is `final_top1`, the top-1 after the last epoch."
    ]
    pretraining = pretraining_rows(runs, expected or {}, labels)
    if pretraining:
        headers = ["setting", "pretraining", "status", "epochs", "final loss", "versions"]
        parts += ["", "## Pretraining", "", markdown_table(headers, pretraining, "lllrrl")]
    if labels:
        headers = ["version", "code", "data (manifest.json sha256)", "--pretrained sha256", "software, device"]
        parts += ["", "## Versions", "", markdown_table(headers, [[n, *v] for v, n in labels.items()])]
    if expected is not None:
        absent = sum(seed not in runs.get(key, {}) for key, seeds in expected.items() for seed in seeds)
        parts += ["", f"Runs the recipes expect that are MISSING: {absent}"]
    return "\n".join(parts) + "\n"
