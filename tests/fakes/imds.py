"""A fake EC2 instance metadata service (IMDSv2 only), for the watchdog's spot-notice polling.

Behaves like ``HttpTokens=required``: ``PUT /latest/api/token`` needs the
``X-aws-ec2-metadata-token-ttl-seconds`` header (1-21600, else 400) and answers the token;
every ``GET /latest/meta-data/...`` needs ``X-aws-ec2-metadata-token`` with a live token
(missing, unknown or expired -> 401). ``spot/instance-action`` and
``events/recommendations/rebalance`` answer 404 until a notice is set. Stdlib only, so it
also runs as a script (e.g. inside a network namespace at 169.254.169.254:80)::

    python tests/fakes/imds.py --bind 169.254.169.254 --port 80 --state-file notices.json

where the state file is read on every request:
``{"instance_action": {"action": "terminate", "time": "..."} | null, "rebalance": {...} | null}``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
NOTICES = {
    "/latest/meta-data/spot/instance-action": "instance_action",
    "/latest/meta-data/events/recommendations/rebalance": "rebalance",
}


def iso_in(seconds: float) -> str:
    """An IMDS timestamp ``seconds`` from now (``2026-09-18T08:22:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


class FakeImds:
    def __init__(self, state_file: Path | None = None) -> None:
        self.state_file = state_file
        self.instance_action: dict[str, Any] | None = None
        self.rebalance: dict[str, Any] | None = None
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ control

    def start(self, bind: str = "127.0.0.1", port: int = 0) -> FakeImds:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                fake._answer(self, *fake._put(self.path, dict(self.headers.items())))

            def do_GET(self) -> None:
                fake._answer(self, *fake._get(self.path, dict(self.headers.items())))

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_instance_action(self, action: str = "terminate", in_s: float = 120) -> None:
        self.instance_action = {"action": action, "time": iso_in(in_s)}

    def set_rebalance(self) -> None:
        self.rebalance = {"noticeTime": iso_in(0)}

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def statuses(self, path: str) -> list[int]:
        with self.lock:
            return [status for _m, p, status in self.requests if p == path]

    # ------------------------------------------------------------------ serving

    def _put(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        if path != TOKEN_PATH:
            return 404, "Not Found"
        if any(k.lower() == "x-forwarded-for" for k in headers):
            return 403, "Forbidden"  # as the real service: no token through a proxy
        ttl = next((v for k, v in headers.items() if k.lower() == TTL_HEADER.lower()), "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return 400, "Bad Request"
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + int(ttl)
        return 200, token

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, str]:
        token = next((v for k, v in headers.items() if k.lower() == TOKEN_HEADER.lower()), "")
        with self.lock:
            live = self.tokens.get(token, 0.0) > time.time()
        if not live:
            return 401, "Unauthorized"
        key = NOTICES.get(path)
        notice = self._notices().get(key) if key else None
        return (200, json.dumps(notice)) if notice else (404, "Not Found")

    def _notices(self) -> dict[str, Any]:
        if self.state_file is None:
            return {"instance_action": self.instance_action, "rebalance": self.rebalance}
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: str) -> None:
        with self.lock:
            self.requests.append((handler.command, handler.path, status))
        payload = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args()
    fake = FakeImds(args.state_file).start(args.bind, args.port)
    print(f"fake IMDS on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
