"""`maelab.init` and `Run`: log from a training loop without slowing it.

The caller's thread only validates and appends tuples to a list under a lock
(a few microseconds a call); a daemon thread does everything else: building
batches, JSON, HTTP over one keep-alive connection, retries, the spool file.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import mimetypes
import numbers
import os
import re
import sys
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _protocol as proto
from ._protocol import Line, Point
from ._spool import WRITABLE, SpoolFile, default_dir, replay
from ._transport import DEFAULT_RETRY, MaelabError, RetryPolicy, Transport, Unreachable

__all__ = ["Run", "init"]

log = logging.getLogger("maelab")

MAX_STEP = 2**53
MAX_KEY = 250
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The exception that is ending the interpreter, seen by our sys.excepthook
# (which runs before atexit handlers) so the exit handler can finish as failed.
_uncaught: BaseException | None = None
_hook_installed = False


def _install_excepthook() -> None:
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        global _uncaught
        _uncaught = value
        previous(kind, value, tb)

    sys.excepthook = hook
    _hook_installed = True


def _exiting_exception() -> BaseException | None:
    return _uncaught or getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text[:1000]


class Run:
    """One external run. Create it with `maelab.init`."""

    def __init__(
        self,
        *,
        name: str,
        config: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        kind: str = "pretrain",
        url: str | None = None,
        token: str | None = None,
        client_run_id: str | None = None,
        spool_dir: str | os.PathLike | None = None,
        lost_after_seconds: int | None = None,
        parent_run: str | None = None,
        exit_timeout: float = 10.0,
        request_timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        flush_points: int = 500,
        flush_seconds: float = 2.0,
        heartbeat_seconds: float = 30.0,
        probe_seconds: float = 60.0,
    ) -> None:
        url = url or os.environ.get("MAELAB_URL")
        token = token or os.environ.get("MAELAB_TOKEN")
        self.client_run_id = client_run_id or uuid.uuid4().hex
        self.name = name
        self.exit_timeout = exit_timeout
        self._flush_points = flush_points
        self._flush_seconds = flush_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._probe_seconds = probe_seconds
        body: dict[str, Any] = {
            "name": name,
            "tags": list(tags),
            # vars(args) of a training script: anything JSON has no type for
            # (paths, devices) is stored as its str().
            "config": json.loads(json.dumps(dict(config or {}), default=str)),
            "kind": kind,
            "client_run_id": self.client_run_id,
        }
        if lost_after_seconds is not None:
            body["lost_after_seconds"] = lost_after_seconds
        if parent_run is not None:
            body["parent_run"] = parent_run
        try:
            proto.encode(body)  # fail here, in the caller, not in the background
        except ValueError as e:
            raise ValueError(
                f"maelab: config cannot be sent as JSON ({e}): NaN and Infinity have no JSON form"
            ) from None
        self._create: Line = {"type": "create", "url": url, "body": body}
        self.spool_path = Path(spool_dir or default_dir()) / f"{self.client_run_id}.jsonl"

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the worker waits here
        self._idle = threading.Condition(self._lock)  # flush() waits here
        self._points: list[Point] = []
        self._artifacts: deque[Line] = deque()
        self._taken: list[Any] = []  # taken by the worker, not yet sent or spooled
        self._finish: Line | None = None
        self._flush_asked = False
        self._closed = False  # finish() called: no more logging
        self._abandoned = False  # finish() timed out: the worker must stop
        self._done = False  # the worker has exited
        self._spool_lock = threading.Lock()  # lock order: _spool_lock, then _lock
        self._spool: SpoolFile | None = None
        self._last_probe = time.monotonic()
        self._keys_ok: set = set()

        self.id: str | None = None
        self._transport = Transport(url, token, timeout=request_timeout, retry=retry) if url else None
        if self._transport is None:
            log.warning("maelab: no server url (url= or MAELAB_URL): logging offline to %s", self.spool_path)
            self._spool = SpoolFile(self.spool_path, self._create)
        else:
            try:
                # Bounded: a dead server must not hold the training back long.
                self.id, _, status = proto.send_create(self._transport, body, deadline=time.monotonic() + 10)
            except Unreachable as e:
                log.warning("maelab: %s; logging offline to %s", e, self.spool_path)
                self._spool = SpoolFile(self.spool_path, self._create)
            else:
                if status not in WRITABLE:
                    raise ValueError(
                        f"maelab: run {self.id} (client_run_id {self.client_run_id!r}) is {status} "
                        "and takes no more points; pass another client_run_id"
                    )

        _install_excepthook()
        atexit.register(self._at_exit)
        self._thread = threading.Thread(
            target=self._work, name=f"maelab-{self.client_run_id[:8]}", daemon=True
        )
        self._thread.start()

    # ---- the caller's side ------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Queue `metrics` at `step` (an integer 0..2^53); returns at once.

        Keys are 1-250 characters without control characters; values finite
        numbers (int or float, or a numpy/torch scalar). A bad key or value
        raises ValueError naming it, and nothing of the call is queued.
        """
        now = time.time()
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            step = self._check_step(step)
        ok = self._keys_ok
        points = []
        for key, value in metrics.items():
            if key not in ok:
                self._check_key(key)
            t = type(value)
            if t is float:
                if value - value != 0.0:  # NaN or ±inf; cheaper than math.isfinite
                    raise ValueError(f"maelab: metric {key!r} is {value} at step {step}: only finite numbers")
            elif t is not int or not -1e308 < value < 1e308:
                value = self._check_value(key, value, step)
            points.append((key, step, value, now))
        with self._lock:
            if self._closed:
                raise RuntimeError("maelab: log() after finish()")
            self._points += points
            if len(self._points) >= self._flush_points:
                self._wake.notify()

    def log_image(
        self,
        key_or_name: str,
        image: bytes | bytearray | memoryview | str | os.PathLike,
        step: int | None = None,
        *,
        kind: str = "reconstruction",
    ) -> None:
        """Queue an image (PNG bytes or a file path) for upload.

        `key_or_name` is a file name ("recon-0003.png") or a key, which
        becomes `{key}-{step:04d}.png` ("recon" at step 3). A path is read
        now, since training scripts often overwrite one file every epoch.
        """
        if step is not None:
            step = self._check_step(step)
        name = key_or_name
        if not os.path.splitext(name)[1]:
            name = f"{name}-{step:04d}.png" if step is not None else f"{name}.png"
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"maelab: artifact name {name!r}: 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        data = Path(image).read_bytes() if isinstance(image, (str, os.PathLike)) else bytes(image)
        line: Line = {
            "type": "artifact",
            "name": name,
            "kind": kind,
            "epoch": step,
            "content_type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "data": data,
        }
        with self._lock:
            if self._closed:
                raise RuntimeError("maelab: log_image() after finish()")
            self._artifacts.append(line)
            self._wake.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent (or spooled)."""
        with self._lock:
            self._flush_asked = True
            self._wake.notify()
            return self._idle.wait_for(
                lambda: (
                    self._done or not (self._points or self._artifacts or self._taken or self._flush_asked)
                ),
                timeout,
            )

    def finish(self, status: str = "succeeded", reason: str | None = None, timeout: float = 30.0) -> None:
        """Send what is queued, then finish the run; waits at most `timeout` s.

        Whatever is not through by then (the server hangs, say) goes to the
        spool file, for `maelab sync`; the process never waits longer.
        """
        if status not in ("succeeded", "failed"):
            raise ValueError(f"maelab: finish status is 'succeeded' or 'failed', not {status!r}")
        body: dict[str, Any] = {"status": status}
        if reason:
            body["reason"] = reason
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._finish = {"type": "finish", "body": body}
            self._wake.notify()
        atexit.unregister(self._at_exit)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon(timeout)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.finish("succeeded")
        else:
            self.finish("failed", _describe(exc))

    def __repr__(self) -> str:
        return f"<maelab.Run {self.name!r} id={self.id} client_run_id={self.client_run_id}>"

    def _at_exit(self) -> None:
        e = _exiting_exception()
        if e is None:
            self.finish("succeeded", timeout=self.exit_timeout)
        else:
            self.finish("failed", _describe(e), timeout=self.exit_timeout)

    def _abandon(self, waited: float) -> None:
        """finish() timed out: spool what the worker still holds, and stop it."""
        with self._spool_lock:
            with self._lock:
                self._abandoned = True
                rest: list[Line] = []
                for item in self._taken:  # a list is points not yet made into batches
                    rest += proto.metric_lines(item) if isinstance(item, list) else [item]
                rest += proto.metric_lines(self._points)
                rest += self._artifacts
                if self._finish is not None and all(line is not self._finish for line in rest):
                    rest.append(self._finish)
                self._points, self._taken = [], []
                self._artifacts.clear()
            if self._spool is None:
                self._spool = SpoolFile(self.spool_path, self._create)
            for line in rest:
                self._spool.append(line)
            self._spool.close()
        log.warning(
            "maelab: the server did not take everything within %.0f s; the rest is in %s: "
            "run `python -m maelab sync %s` later",
            waited,
            self.spool_path,
            self.spool_path.parent,
        )

    # ---- validation (the slow path of log) -------------------------------

    def _check_step(self, step: Any) -> int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step <= MAX_STEP:
            raise ValueError(f"maelab: step must be an integer 0 to 2^53, not {step!r}")
        return int(step)

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise ValueError(f"maelab: metric key {key!r} is not a string")
        if not 1 <= len(key) <= MAX_KEY:
            raise ValueError(f"maelab: metric key {key[:40]!r}... is {len(key)} characters (1-{MAX_KEY})")
        if any(unicodedata.category(c) == "Cc" for c in key):
            raise ValueError(f"maelab: metric key {key!r} has a control character")
        if len(self._keys_ok) < 10_000:  # a cache, not a leak, for generated keys
            self._keys_ok.add(key)

    def _check_value(self, key: str, value: Any, step: int) -> int | float:
        if hasattr(value, "item") and not isinstance(value, (bool, int, float)):
            value = value.item()  # numpy scalars, one-element torch tensors
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"maelab: metric {key!r} at step {step} is {value!r}, not a number")
        if isinstance(value, numbers.Integral):
            value = int(value)
            finite = -1e308 < value < 1e308  # what a float (and the server) can hold
        else:
            value = float(value)
            finite = math.isfinite(value)
        if not finite:
            raise ValueError(f"maelab: metric {key!r} is {value} at step {step}: only finite numbers")
        return value

    # ---- the background thread --------------------------------------------

    def _work(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("maelab: the background thread failed; logging stopped")
        finally:
            if self._transport is not None:
                self._transport.close()
            with self._lock:
                self._done = True
                self._idle.notify_all()

    def _loop(self) -> None:
        last_sent = time.monotonic()
        next_flush = last_sent + self._flush_seconds
        while True:
            with self._lock:
                self._wake.wait_for(
                    lambda: (
                        len(self._points) >= self._flush_points
                        or self._artifacts
                        or self._finish is not None
                        or self._flush_asked
                        or self._abandoned
                    ),
                    max(0.0, min(next_flush, last_sent + self._heartbeat_seconds) - time.monotonic()),
                )
                if self._abandoned:
                    return
                # Only swaps under the lock (log() waits on it); the points
                # stay visible in _taken so _abandon() can still spool them.
                raw, self._points = self._points, []
                others = list(self._artifacts)
                self._artifacts.clear()
                finish = self._finish
                tail = others + ([finish] if finish is not None else [])
                self._taken = ([raw] if raw else []) + tail
                self._flush_asked = False
            lines = list(proto.metric_lines(raw)) + tail
            with self._lock:
                if self._abandoned:
                    return
                self._taken = list(lines)
            if time.monotonic() >= next_flush or lines:
                next_flush = time.monotonic() + self._flush_seconds
            for line in lines:
                self._deliver(line)
                with self._lock:
                    if self._taken and self._taken[0] is line:
                        self._taken.pop(0)
            if lines:
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= self._heartbeat_seconds:
                self._heartbeat()
                last_sent = time.monotonic()
            if self._spool is not None and time.monotonic() - self._last_probe >= self._probe_seconds:
                self._recover()
            with self._lock:
                self._idle.notify_all()
                if self._abandoned:
                    return
            if finish is not None:
                if self._spool is not None:
                    self._spool.close()
                    log.warning(
                        "maelab: run %r is in %s: run `python -m maelab sync %s` when the server is back",
                        self.name,
                        self.spool_path,
                        self.spool_path.parent,
                    )
                return

    def _deliver(self, line: Line) -> None:
        if self._spool is not None and (
            line["type"] == "finish" or time.monotonic() - self._last_probe >= self._probe_seconds
        ):
            self._recover()
        if self._spool is not None or self._transport is None or self.id is None:
            self._to_spool(line)
            return
        try:
            proto.send(self._transport, self.id, line, give_up=lambda: self._abandoned)
        except MaelabError as e:
            log.warning("maelab: %s; dropped", e)
        except Unreachable as e:
            log.warning(
                "maelab: %s; spooling to %s, retrying every %g s", e, self.spool_path, self._probe_seconds
            )
            self._last_probe = time.monotonic()
            self._to_spool(line)

    def _to_spool(self, line: Line) -> None:
        with self._spool_lock:
            if self._abandoned:
                return
            if self._spool is None:
                self._spool = SpoolFile(self.spool_path, self._create)
            self._spool.append(line)
            with self._lock:
                if self._taken and self._taken[0] is line:
                    self._taken.pop(0)

    def _heartbeat(self) -> None:
        if self._spool is None and self._transport is not None and self.id is not None:
            try:
                proto.send_heartbeat(self._transport, self.id, give_up=lambda: self._abandoned)
            except (MaelabError, Unreachable) as e:
                log.warning("maelab: %s", e)

    def _recover(self) -> None:
        """Back online? Replay the spool (one attempt a request), then delete it."""
        self._last_probe = time.monotonic()
        if self._transport is None:
            return
        with self._spool_lock:
            if self._abandoned or self._spool is None:
                return
            lines = self._spool.lines()
        try:
            done = replay(self._transport, lines, run_id=self.id, attempts=1)
        except Unreachable as e:
            log.debug("maelab: still offline: %s", e)
            return
        except MaelabError as e:  # the token or the run refused: stay spooled
            log.warning("maelab: cannot replay the spool: %s", e)
            return
        for r in done.refused:
            log.warning("maelab: %s; dropped", r)
        with self._spool_lock:
            if self._abandoned:
                return
            self.id = done.run_id
            assert self._spool is not None
            self._spool.delete()
            self._spool = None
        log.warning("maelab: back online: %d spooled batches sent to run %s", done.batches, self.id)


def init(
    name: str,
    config: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    kind: str = "pretrain",
    url: str | None = None,
    token: str | None = None,
    client_run_id: str | None = None,
    spool_dir: str | os.PathLike | None = None,
    lost_after_seconds: int | None = None,
    **options: Any,
) -> Run:
    """Create an external run on the server (`POST /api/v1/runs/external`).

    `url`/`token` default to $MAELAB_URL/$MAELAB_TOKEN. `client_run_id`
    (default: a fresh uuid4 hex) makes creation idempotent, so a retried or
    later-synced create never makes a second run. An unreachable server does
    not stop training: the run is logged to `spool_dir` (default
    ~/.maelab/spool) and the client keeps trying to get back online.
    Further options: see `Run` (exit_timeout, flush_points, retry, ...).
    """
    return Run(
        name=name,
        config=config,
        tags=tags,
        kind=kind,
        url=url,
        token=token,
        client_run_id=client_run_id,
        spool_dir=spool_dir,
        lost_after_seconds=lost_after_seconds,
        **options,
    )
