"""A real HTTP server on 127.0.0.1 for fake cloud APIs, with fault injection and a request log.

Subclasses route a request to a name (``"POST /v2/pods"``, ``"graphql rentSpotPod"``) and
handle it against their in-memory state. Tests inject faults by route name::

    fake.inject("POST /v2/pods", 500, after=True)   # do the create, then answer 500
    fake.inject("GET /v2/pods", 429, headers={"Retry-After": "0"})

The CLI under test runs in a subprocess and reaches the server over loopback.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture(provider: str, name: str) -> Any:
    return json.loads((FIXTURES / provider / name).read_text())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    route: str = ""


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    route: str
    reply: Reply
    times: int
    after: bool  # perform the real operation first, then answer with the fault


class FakeApi:
    """Base of the fake servers. Subclasses implement ``route``, ``handle``, ``unauthorized``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self._faults: list[Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> FakeApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(
        self,
        route: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after: bool = False,
    ) -> None:
        with self.lock:
            self._faults.append(Fault(route, Reply(status, body, headers or {}), times, after))

    def seen(self, route: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.route == route]

    # ------------------------------------------------------------ subclass API

    def route(self, request: Request) -> str:
        raise NotImplementedError

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        raise NotImplementedError

    # ------------------------------------------------------------------ serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(
            method=handler.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        with self.lock:
            request.route = self.route(request)
            self.requests.append(request)
            reply = self._reply(request)
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        handler.send_response(reply.status)
        if payload:
            handler.send_header(
                "Content-Type", reply.headers.pop("Content-Type", "application/json")
            )
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _reply(self, request: Request) -> Reply:
        fault = next((f for f in self._faults if f.route == request.route), None)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            if not fault.after:
                return Reply(fault.reply.status, fault.reply.body, dict(fault.reply.headers))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.unauthorized()
        reply = self.handle(request)
        if fault is not None:
            return Reply(fault.reply.status, fault.reply.body, dict(fault.reply.headers))
        return reply
