"""A tiny in-process stand-in for the maelab ingest API that records requests."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

import maelab


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]
    at: float
    status: int = 0  # the fake's answer

    def json(self) -> Any:
        return json.loads(self.body)


# A rule answers requests whose "METHOD path" matches: (status, headers, body)
# or None to fall through to the defaults; "hang" never answers.
Rule = Callable[[Request], Optional[tuple[int, dict[str, str], Any]]]


@dataclass
class FakeMaelab:
    requests: list[Request] = field(default_factory=list)
    rules: list[tuple[str, Rule]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # client_run_id -> run id
    status: dict[str, str] = field(default_factory=dict)  # run id -> status
    url: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def on(self, pattern: str, rule: Rule) -> None:
        self.rules.append((pattern, rule))

    def hang(self, pattern: str) -> None:
        self.on(pattern, lambda r: "hang")  # type: ignore[arg-type,return-value]

    def of(self, method: str, suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def points(self) -> list[dict[str, Any]]:
        """Points of accepted batches."""
        return [p for r in self.of("POST", "/metrics") if r.status == 200 for p in r.json()["points"]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def answer(self, req: Request) -> Any:
        line = f"{req.method} {req.path}"
        for pattern, rule in self.rules:
            if re.fullmatch(pattern, line):
                got = rule(req)
                if got is not None:
                    return got
        if line == "POST /api/v1/runs/external":
            body = req.json()
            crid = body.get("client_run_id")
            if crid in self.runs:
                run_id = self.runs[crid]
                return 200, {}, {"run_id": run_id, "name": body["name"], "status": self.status[run_id]}
            run_id = str(uuid.uuid4())
            self.runs[crid] = run_id
            self.status[run_id] = "running"
            return 201, {}, {"run_id": run_id, "name": body["name"], "status": "running"}
        run_id = req.path.split("/")[4]
        if self.status.get(run_id, "running") != "running" and not req.path.endswith("/finish"):
            return (
                409,
                {},
                {"error": "conflict", "field": None, "reason": "a finished run takes no more writes"},
            )
        if req.method == "POST" and req.path.endswith("/metrics"):
            return 200, {}, {"accepted": len(req.json()["points"])}
        if req.method == "PUT" and "/artifacts/" in req.path:
            return 201, {}, {"name": req.path.rsplit("/", 1)[1], "size": len(req.body)}
        if req.path.endswith("/heartbeat"):
            return 200, {}, {"status": "running"}
        if req.path.endswith("/finish"):
            status = req.json()["status"]
            if self.status.get(run_id, "running") not in ("running", status):
                return 409, {}, {"error": "conflict", "field": None, "reason": "finished already"}
            self.status[run_id] = status
            return 200, {}, {"run_id": run_id, "status": status}
        return 404, {}, {"error": "not_found", "field": None, "reason": line}


def _handler(fake: FakeMaelab) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server
        disable_nagle_algorithm = True  # headers and body are separate writes here

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            parts = urlsplit(self.path)
            req = Request(
                self.command,
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query).items()},
                {k.lower(): v for k, v in self.headers.items()},
                body,
                self.client_address,
                time.monotonic(),
            )
            fake.requests.append(req)
            got = fake.answer(req)
            if got == "hang":
                fake.stop.wait()
                self.close_connection = True
                return
            status, headers, payload = got
            req.status = status
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

    return Handler


def start_fake(port: int = 0) -> tuple[FakeMaelab, ThreadingHTTPServer]:
    fake = FakeMaelab()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return fake, server


def stop_fake(fake: FakeMaelab, server: ThreadingHTTPServer) -> None:
    fake.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake():
    f, server = start_fake()
    yield f
    stop_fake(f, server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAST = maelab.RetryPolicy(attempts=3, base=0.01, cap=0.05)


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def make_run(fake, spool):
    """maelab.init against the fake server, fast retries, finished at teardown."""
    made: list[maelab.Run] = []

    def make(name: str = "test", **kw: Any) -> maelab.Run:
        opts: dict[str, Any] = dict(url=fake.url, token="t0k", spool_dir=spool, retry=FAST)
        opts.update(kw)
        run = maelab.init(name, **opts)
        made.append(run)
        return run

    yield make
    for run in made:
        run.finish(timeout=5)
