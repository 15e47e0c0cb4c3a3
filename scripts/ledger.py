"""The results ledger: every run the recipes wrote under RUNS_DIR, as one Markdown table against the paper.

    python scripts/ledger.py RUNS_DIR [--paper scripts/paper_results.json] [--no-recipes] [--out FILE]

The layout of the runs tree and what a row of the table holds are described in ``engine/ledger.py``
(the ledger's logic) and docs/recipes.md. The runs to expect come from the recipes' ``DRY_RUN=1 ... all``
command lines, run with this command's environment (so set ``SEEDS``, ``PRETRAIN_REPRESENTATION`` ... as
for the runs). A metrics file that cannot be read, or lies elsewhere in the tree, stops the ledger with
one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.io import atomic_write_bytes
from engine.ledger import PAPER_RESULTS, LedgerError, collect_runs, expected_runs, format_ledger, load_paper


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="RUNS_ROOT of the recipe scripts (default there: ./runs)")
    parser.add_argument(
        "--paper",
        default=str(PAPER_RESULTS),
        metavar="JSON",
        help="the paper's figures (default scripts/paper_results.json)",
    )
    parser.add_argument(
        "--no-recipes",
        dest="recipes",
        action="store_false",
        help="do not ask the recipe scripts which runs to expect (no missing-run flags)",
    )
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the Markdown to FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs_dir = Path(args.runs_dir)
    try:
        paper = load_paper(Path(args.paper))
        runs, pretrainings = collect_runs(runs_dir)
        expected = expected_runs(runs_dir) if args.recipes else {}
    except LedgerError as error:
        print(f"ledger: {error}", file=sys.stderr)
        return 2
    text = format_ledger(runs, pretrainings, expected, paper)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
