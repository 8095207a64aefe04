"""The ingest API's requests, one shape for the live client and the spool.

A unit of work is a "line": a dict that is both what the background thread
sends and, as is, one line of a spool file (docs/ingest.md for the API):

    {"type": "create",   "url": ..., "body": {...POST /runs/external...}}
    {"type": "metrics",  "body": {"points": [{"key", "step", "value", "wall_time"}, ...]}}
    {"type": "artifact", "name": ..., "kind": ..., "epoch": N|None, "content_type": ..., "data": bytes}
    {"type": "finish",   "body": {"status": ..., "reason"?: ...}}

Keeping one shape means `maelab sync` replays a spool file with exactly the
code that would have sent it live.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ._transport import Response, Transport, run_path

Line = dict[str, Any]
# (key, step, value, wall_time): what `Run.log` buffers; a tuple is the
# cheapest thing to build in the caller's thread.
Point = tuple[str, int, float, float]

CREATE_PATH = "/api/v1/runs/external"
MAX_POINTS = 1000
# 1 MiB is the server's limit; leave room for the envelope and the estimate.
MAX_BYTES = 1_000_000


def encode(obj: Any) -> bytes:
    # allow_nan=False: NaN must never reach the server (the caller validated;
    # this is the last guard).
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


def metric_lines(points: list[Point]) -> Iterator[Line]:
    """Batches of at most MAX_POINTS points and MAX_BYTES of JSON.

    The size is bounded, not measured: a key's UTF-8 is at most 4 bytes a
    character and escaping (only `"` and `\\`: control characters are refused)
    at most doubles ASCII, so 4 bytes a character plus 100 for the rest of a
    point is an upper bound, and no batch needs encoding twice.
    """
    batch: list[dict[str, Any]] = []
    size = 0
    for key, step, value, wall_time in points:
        est = 4 * len(key) + 100
        if batch and (len(batch) == MAX_POINTS or size + est > MAX_BYTES):
            yield {"type": "metrics", "body": {"points": batch}}
            batch, size = [], 0
        batch.append({"key": key, "step": step, "value": value, "wall_time": wall_time})
        size += est
    if batch:
        yield {"type": "metrics", "body": {"points": batch}}


def for_spool(line: Line) -> bytes:
    """One JSONL line; artifact bytes go in as base64."""
    if "data" in line:
        line = dict(line)
        line["data_b64"] = base64.b64encode(line.pop("data")).decode()
    return encode(line) + b"\n"


def send_create(transport: Transport, body: dict[str, Any], **call: Any) -> tuple[str, bool, str]:
    """POST /runs/external; (run id, whether this call created it, its status)."""
    r = transport.call("POST", CREATE_PATH, encode(body), what="creating the run", **call)
    answer = _answer(r)
    return str(answer["run_id"]), r.status == 201, str(answer.get("status", "running"))


def send_heartbeat(transport: Transport, run_id: str, **call: Any) -> None:
    transport.call("POST", run_path(run_id, "heartbeat"), what="heartbeat", **call)


def send(transport: Transport, run_id: str, line: Line, **call: Any) -> Response:
    """Send one metrics, artifact or finish line (`call`: Transport.call's options)."""
    kind = line["type"]
    if kind == "metrics":
        n = len(line["body"]["points"])
        return transport.call(
            "POST", run_path(run_id, "metrics"), encode(line["body"]), what=f"sending {n} points", **call
        )
    if kind == "artifact":
        data = line["data"] if "data" in line else base64.b64decode(line["data_b64"])
        query = {"kind": line["kind"], "sha256": hashlib.sha256(data).hexdigest()}
        if line.get("epoch") is not None:
            query["epoch"] = line["epoch"]
        return transport.call(
            "PUT",
            run_path(run_id, "artifacts", line["name"]),
            data,
            query=query,
            content_type=line.get("content_type") or "application/octet-stream",
            what=f"uploading {line['name']}",
            **call,
        )
    if kind == "finish":
        return transport.call(
            "POST", run_path(run_id, "finish"), encode(line["body"]), what="finishing the run", **call
        )
    raise ValueError(f"unknown line type {kind!r}")


def count(lines: Iterable[Line]) -> tuple[int, int, int]:
    """(batches, points, artifacts) in these lines."""
    b = p = a = 0
    for line in lines:
        if line["type"] == "metrics":
            b += 1
            p += len(line["body"]["points"])
        elif line["type"] == "artifact":
            a += 1
    return b, p, a


def _answer(r: Response) -> dict[str, Any]:
    body = r.json()
    if not isinstance(body, dict) or "run_id" not in body:
        raise ValueError(f"the server's answer has no run_id: {r.body[:200]!r}")
    return body
