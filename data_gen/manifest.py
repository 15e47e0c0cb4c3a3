"""Write or verify the ``manifest.json`` of a prepared split folder (the format: ``common/manifest.py``).

python data_gen/manifest.py verify FOLDER   # exit 0: matches, 1: mismatch (one line each), 2: bad input
python data_gen/manifest.py write FOLDER    # record a folder prepared by another tool
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import run_main
from common.manifest import MANIFEST_NAME, verify, write_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write or verify the manifest.json of a prepared split folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="check every file (sha256, size, shape, dtype); exit 1 on a mismatch")
    write = sub.add_parser("write", help="hash the folder's files and write manifest.json")
    for p in (check, write):
        p.add_argument("folder", help="split folder, e.g. data/NTU-RGB-D-60-AGCN/xsub")
    write.add_argument("--tool", default="data_gen/manifest.py write", help="what prepared the folder, recorded")
    return parser


def _run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if args.command == "write":
        print(f"wrote {write_manifest(folder, tool=args.tool, arguments={'folder': str(folder)})}")
        return 0
    lines = verify(folder)
    summary = f"{len(lines)} mismatch(es) with" if lines else "matches"
    print(*lines, f"{folder}: {summary} {MANIFEST_NAME}", sep="\n")
    return 1 if lines else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run_main(parser.prog, parser, _run, argv, system_errors=True)


if __name__ == "__main__":
    sys.exit(main())
