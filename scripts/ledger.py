"""The results ledger: every run the recipes wrote under RUNS_DIR, as Markdown tables against the paper.

    python scripts/ledger.py RUNS_DIR [--paper scripts/paper_results.json] [--no-recipes] [--out FILE]

The tables and the runs it expects (set ``SEEDS`` ... as for the runs): docs/recipes.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import run_main
from common.io import atomic_write_bytes, check_output_file
from engine.ledger import PAPER_RESULTS, collect_runs, expected_runs, format_ledger, load_paper

PROG = "ledger.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="RUNS_ROOT of the recipe scripts (default there: ./runs)")
    parser.add_argument("--paper", default=str(PAPER_RESULTS), metavar="JSON", help="the paper's figures")
    parser.add_argument("--no-recipes", dest="recipes", action="store_false", help="expect no runs (no missing runs)")
    parser.add_argument("--out", metavar="FILE", help="also write the Markdown to FILE")
    return parser


def run(args: argparse.Namespace) -> None:
    """Read the runs and the paper's figures, print the ledger (and write it to ``--out``)."""
    if args.out:
        check_output_file(args.out, "--out")
    runs_dir, paper = Path(args.runs_dir), load_paper(Path(args.paper))
    text = format_ledger(collect_runs(runs_dir, paper), expected_runs(runs_dir) if args.recipes else None, paper)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
    sys.stdout.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
