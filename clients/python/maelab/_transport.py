"""One keep-alive HTTP connection to a maelab server, with retries.

Standard library only (`http.client`): the client must install anywhere a
training script runs, and one sequential connection is all a background
flusher needs. Every request maelab's ingest API takes is idempotent (upserts
on (run, key, step), create keyed by `client_run_id`, `PUT` of a name, finish
with the same status), so retrying any of them is safe.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["DEFAULT_RETRY", "MaelabError", "Response", "RetryPolicy", "Transport", "Unreachable"]

USER_AGENT = "maelab-python/0.1"


class MaelabError(Exception):
    """The server refused a request (a 4xx other than 429): retrying cannot help."""

    def __init__(self, status: int, body: Mapping[str, Any], what: str) -> None:
        self.status = status
        self.field: str | None = body.get("field")
        self.reason: str = str(body.get("reason") or body.get("error") or "no reason given")
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{what}: HTTP {status}{where}: {self.reason}")


class Unreachable(Exception):
    """No answer (connection errors, 5xx, 429) after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff: attempt n waits about base * 2^n, at most cap.

    The defaults give up after about 30 s in all, so a flaky network delays
    the background flusher, never the training loop, and a dead server is
    noticed (and the run spooled) within half a minute.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        # "Full jitter" (AWS architecture blog): spreads clients that failed
        # together so they do not come back together.
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


DEFAULT_RETRY = RetryPolicy()


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return {"reason": self.body[:200].decode("utf-8", "replace")}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """Requests to one server over one persistent connection (not thread-safe:
    one owner at a time, which the client guarantees by sending only from its
    background thread after `init`)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"maelab url must be http(s)://host[:port][/prefix], got {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retry = retry
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn: http.client.HTTPConnection
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            conn.connect()
            # http.client sends the headers and the body in two writes; with
            # Nagle's algorithm the body then waits for the server's delayed
            # ACK of the headers (40 ms a request on Linux).
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def once(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Response:
        """One request. A kept-alive connection that the server has closed
        meanwhile fails on first use: reopen it and send again, once (every
        request of this API is idempotent, so that is always safe)."""
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            headers["Content-Type"] = content_type
        while True:
            reused = self._conn is not None
            try:
                conn = self._connect()
                conn.request(method, target, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if reused:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if r.will_close:
                self.close()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        what: str,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        deadline: float | None = None,
        give_up: Callable[[], bool] = lambda: False,
        attempts: int | None = None,
    ) -> Response:
        """A request with retries on 429, 5xx and connection errors.

        Returns a 2xx answer; raises `MaelabError` on any other 4xx (at once),
        `Unreachable` when the attempts (default: the policy's), the `deadline`
        (time.monotonic()) or `give_up()` run out."""
        last = "no attempt made"
        attempts = attempts or self.retry.attempts
        for attempt in range(attempts):
            retry_after = None
            try:
                r = self.once(method, path, body, query=query, content_type=content_type)
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timeout (an OSError), DNS
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if r.status < 400:
                    return r
                if r.status != 429 and r.status < 500:
                    raise MaelabError(r.status, _as_dict(r.json()), what)
                last = f"HTTP {r.status}: {_as_dict(r.json()).get('reason', '')}".rstrip(": ")
                retry_after = parse_retry_after(r.headers.get("retry-after"))
            if attempt + 1 == attempts or give_up():
                break
            pause = self.retry.delay(attempt, retry_after)
            if deadline is not None and time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
        raise Unreachable(f"{what}: {self.url} unreachable ({last})")


def _as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def run_path(run_id: str, *rest: str) -> str:
    return "/api/v1/runs/" + "/".join(quote(p, safe="") for p in (run_id, *rest))
