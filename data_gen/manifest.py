"""Write or verify the ``manifest.json`` of a prepared split folder (the format: ``common/manifest.py``).

python data_gen/manifest.py verify FOLDER   # exit 0: matches, 1: mismatch (one line each), 2: bad input
python data_gen/manifest.py write FOLDER    # record a folder prepared before manifests existed
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.io import OutputError
from common.manifest import MANIFEST_NAME, ManifestError, verify, write_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write or verify the manifest.json of a prepared split folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "verify", help="check every file (sha256, size, shape, dtype) against manifest.json; exit 1 on a mismatch"
    )
    check.add_argument("folder", help="split folder, e.g. data/NTU-RGB-D-60-AGCN/xsub")
    write = sub.add_parser(
        "write", help="hash the folder's files and write manifest.json (for folders prepared before manifests existed)"
    )
    write.add_argument("folder", help="split folder, e.g. data/NTU-RGB-D-60-AGCN/xsub")
    write.add_argument(
        "--tool", default="data_gen/manifest.py write", help="what prepared the folder, recorded in the manifest"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        if args.command == "write":
            path = write_manifest(folder, tool=args.tool, arguments={"folder": str(folder)})
            sys.stdout.write(f"wrote {path}\n")
            return 0
        lines = verify(folder)
    except (ManifestError, OutputError) as error:
        sys.stderr.write(f"{parser.prog}: error: {error}\n")
        return 2
    except OSError as error:  # not the input's fault (an I/O error, say): one line, status 1
        sys.stderr.write(f"{parser.prog}: error: {error}\n")
        return 1
    for line in lines:
        sys.stdout.write(line + "\n")
    if lines:
        sys.stdout.write(f"{folder}: {len(lines)} mismatch(es) with {MANIFEST_NAME}\n")
        return 1
    sys.stdout.write(f"{folder}: matches {MANIFEST_NAME}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
