"""Spool files: what could not be sent, kept for `maelab sync`.

A spool file is JSONL (see `_protocol`): first the create request, then one
line per batch or artifact, finally the finish. Because creation is keyed by
`client_run_id` and metrics are upserts, replaying a file any number of
times, whole or in part, converges on the same run: that is what lets sync
delete a file only after everything in it was accepted, and lets a crashed
sync simply be run again.

The process writing a spool file holds an exclusive `flock` on it, so sync
skips files of runs still in progress, and finishes the others (as failed
when their writer died before finishing: an offline sync must end the run,
or it would wait to be marked lost).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from . import _protocol as proto
from ._protocol import Line
from ._transport import DEFAULT_RETRY, MaelabError, RetryPolicy, Transport, Unreachable

try:
    import fcntl
except ImportError:  # Windows: no lock; do not sync while a run is writing
    fcntl = None  # type: ignore[assignment]

# Statuses in which an external run takes writes (a lost run is revived).
WRITABLE = ("running", "lost")
ORPHAN_REASON = "the client exited without finishing; finished by `maelab sync` from its spool file"


def default_dir() -> Path:
    return Path(os.environ.get("MAELAB_SPOOL_DIR") or Path.home() / ".maelab" / "spool")


def _try_lock(f: IO[Any]) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class SpoolFile:
    """An open, locked spool file that lines are appended to (one writer)."""

    def __init__(self, path: Path, create: Line) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f: IO[bytes] | None = open(path, "ab")
        if not _try_lock(self._f):
            self._f.close()
            raise RuntimeError(f"{path} is locked by another process (same client_run_id?)")
        if self._f.tell() == 0:
            self.append(create)

    def append(self, line: Line) -> None:
        assert self._f is not None, "spool file closed"
        self._f.write(proto.for_spool(line))
        # Flushed to the OS per line: a crash of the training process keeps
        # every line written so far (fsync would cost more than it saves).
        self._f.flush()

    def lines(self) -> list[Line]:
        return read(self.path)[0]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.close()


def read(path: Path) -> tuple[list[Line], list[str]]:
    """The lines of a spool file and notes on the ones skipped (an unreadable
    last line is the normal trace of a process killed mid-write)."""
    lines: list[Line] = []
    notes: list[str] = []
    raw = path.read_bytes().splitlines()
    for n, text in enumerate(raw, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if not isinstance(line, dict) or "type" not in line:
                raise ValueError("not a spool line")
        except ValueError:
            notes.append(f"line {n} unreadable{' (cut off)' if n == len(raw) else ''}, skipped")
            continue
        lines.append(line)
    return lines, notes


@dataclass
class Replay:
    """What replaying a spool file did."""

    run_id: str | None = None
    batches: int = 0
    points: int = 0
    artifacts: int = 0
    finished: str | None = None
    refused: list[str] = field(default_factory=list)


def replay(
    transport: Transport,
    lines: list[Line],
    *,
    run_id: str | None = None,
    finish_orphan: bool = False,
    **call: Any,
) -> Replay:
    """Send a spool file's lines in order.

    Raises `Unreachable` (try again later), or `MaelabError` when the create,
    or the token, is refused (401/403/404: nothing in the file can succeed).
    A batch or artifact refused for itself (409/413/422) is noted in
    `refused` and skipped, as the live client drops it: it can never succeed.
    """
    done = Replay(run_id=run_id)
    for line in lines:
        kind = line["type"]
        if kind == "create":
            if done.run_id is None:
                done.run_id, created, status = proto.send_create(transport, line["body"], **call)
                if not created and status not in WRITABLE:
                    # Finished before: by an earlier sync of this file (killed
                    # before it deleted it, say) or by its live client, which
                    # finishes only after every earlier line. Nothing to send.
                    done.finished = f"{status} already; nothing sent"
                    return done
            continue
        if done.run_id is None:
            raise ValueError("the spool file does not start with its create line")
        try:
            proto.send(transport, done.run_id, line, **call)
        except MaelabError as e:
            if e.status in (401, 403, 404):
                raise
            if kind == "finish" and e.status == 409:
                done.finished = "already finished with another status"
                continue
            done.refused.append(str(e))
            continue
        if kind == "finish":
            done.finished = line["body"]["status"]
        else:
            b, p, a = proto.count([line])
            done.batches, done.points, done.artifacts = done.batches + b, done.points + p, done.artifacts + a
    if done.finished is None and finish_orphan and done.run_id is not None:
        proto.send(
            transport,
            done.run_id,
            {"type": "finish", "body": {"status": "failed", "reason": ORPHAN_REASON}},
            **call,
        )
        done.finished = "failed (its client never finished it)"
    return done


def sync_dir(
    directory: Path,
    *,
    url: str | None = None,
    token: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    out: Callable[[str], None] = print,
) -> int:
    """Upload every spool file in `directory`; 0 when all went through.

    Each file: create (idempotent by its client_run_id), every batch and
    artifact (upserts), the finish; the file is deleted only after that.
    """
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    if not files:
        out(f"{directory}: nothing to sync")
        return 0
    failed = 0
    for path in files:
        with open(path, "rb") as f:
            if not _try_lock(f):
                out(f"{path.name}: in use by a running client; skipped")
                continue
            lines, notes = read(path)
            try:
                if not lines or lines[0]["type"] != "create":
                    raise ValueError("no create line first: not a maelab spool file")
                server = url or lines[0].get("url")
                if not server:
                    raise ValueError("no server url: pass --url or set MAELAB_URL")
                transport = Transport(server, token, retry=retry)
                try:
                    done = replay(transport, lines, finish_orphan=True)
                finally:
                    transport.close()
            except (Unreachable, MaelabError, ValueError, KeyError) as e:
                failed += 1
                out(f"{path.name}: FAILED: {e}; kept")
                continue
            # Deleted while still locked: a concurrent sync cannot replay it again.
            path.unlink()
        summary = (
            f"{path.name}: run {done.run_id}: {done.batches} batches ({done.points:,} points), "
            f"{done.artifacts} artifacts, finished {done.finished}"
        )
        problems = notes + [f"refused: {r}" for r in done.refused]
        if done.refused:
            failed += 1
        out(summary + "".join(f"; {p}" for p in problems) + "; deleted")
    return 1 if failed else 0
