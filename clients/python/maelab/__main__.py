"""`python -m maelab sync [DIR]` and the `maelab-sync [DIR]` console script."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._spool import default_dir, sync_dir
from ._transport import RetryPolicy


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=None,
        help="folder of spool files (default: $MAELAB_SPOOL_DIR or ~/.maelab/spool)",
    )
    p.add_argument(
        "--url",
        default=os.environ.get("MAELAB_URL"),
        help="server (default: $MAELAB_URL, else the url each file was written for)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("MAELAB_TOKEN"),
        help="API token (default: $MAELAB_TOKEN); use the one the run was created with",
    )
    p.add_argument(
        "--attempts",
        type=int,
        default=RetryPolicy.attempts,
        help="tries per request before a file counts as failed (default: %(default)s)",
    )


def _run_sync(args: argparse.Namespace) -> int:
    retry = RetryPolicy(attempts=max(1, args.attempts))
    return sync_dir(args.dir or default_dir(), url=args.url, token=args.token, retry=retry)


def sync_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="maelab-sync", description="Upload spooled runs, then delete their files."
    )
    _sync_args(p)
    return _run_sync(p.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maelab")
    sub = p.add_subparsers(dest="command", required=True)
    _sync_args(sub.add_parser("sync", help="upload spooled runs, then delete their files"))
    return _run_sync(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
