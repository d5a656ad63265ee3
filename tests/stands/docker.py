"""A private dockerd plus Debian's docker-registry on loopback, for integration tests.

Follows the tested ``ci/docker.sh`` recipe (docs: test-infra.md §4): dockerd is started by hand
with its own data root, exec root and socket under a temp dir, without iptables or a bridge
(so builds and containers use ``--network host``). Images cannot be pulled here: the base
image is the debootstrapped Debian + python3 that ``scripts/install-test-deps.sh`` caches as a
tarball, ``docker import``ed into each stand. The registry listens on a free loopback port
(127.0.0.0/8 counts as an insecure registry, so plain HTTP works)::

    stand = start_docker()
    subprocess.run(["docker", "-H", stand.host, "images"], check=True)
    stand.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.stands.sshd import _free_port, log_tail, spawn_daemon, terminate

DOCKERD = "/usr/sbin/dockerd"
REGISTRY = "/usr/bin/docker-registry"
BASE_TAR = Path("/var/cache/runctl-test/debian-bookworm-python3.tar")
BASE_IMAGE = "local/debian-python3:bookworm"
START_TIMEOUT_S = 20.0


@dataclass
class DockerStand:
    workdir: Path
    host: str  # DOCKER_HOST value: unix://<workdir>/docker.sock
    registry: str  # host:port of the registry
    base_image: str
    dockerd: subprocess.Popen[bytes]
    registry_proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def containers(self) -> str:
        """Every container, running or not, one ``name image status`` line each."""
        fmt = "{{.Names}} {{.Image}} {{.Status}}"
        return self.docker("ps", "-a", "--format", fmt).stdout

    def catalog(self) -> list[str]:
        """Repositories the registry holds (registry API ``/v2/_catalog``)."""
        with urllib.request.urlopen(f"http://{self.registry}/v2/_catalog", timeout=5) as r:
            repos: list[str] = json.load(r)["repositories"]
            return repos

    def stop(self) -> None:
        """Stop the registry and dockerd (which stops its containers); idempotent."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
        terminate([self.registry_proc, self.dockerd], [], grace=10.0)
        for mount in (self.workdir / "exec" / "netns" / "default", self.workdir / "root"):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def docker_available() -> str | None:
    """Why the stand cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "docker stand needs root (it runs dockerd)"
    for path, package in ((DOCKERD, "docker.io"), (REGISTRY, "docker-registry")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (apt-get install {package})"
    if not shutil.which("docker"):
        return "docker CLI missing (apt-get install docker.io)"
    if not BASE_TAR.is_file():
        return f"{BASE_TAR} missing (run scripts/install-test-deps.sh as root)"
    return None


def start_docker() -> DockerStand:
    """Start dockerd and the registry; import the base image. Blocks until both answer."""
    # A short path: the socket must fit in sun_path (108 bytes).
    workdir = Path(tempfile.mkdtemp(prefix="runctl-dkr-", dir="/tmp"))
    host = f"unix://{workdir}/docker.sock"
    dockerd = spawn_daemon(
        [
            DOCKERD,
            "--data-root", f"{workdir}/root",
            "--exec-root", f"{workdir}/exec",
            "-H", host,
            "--pidfile", f"{workdir}/dockerd.pid",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--bridge=none",
        ],
        workdir / "dockerd.log",
    )  # fmt: skip
    port = _free_port()
    (workdir / "registry.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir}/registry\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = spawn_daemon([REGISTRY, "serve", str(workdir / "registry.yml")],
                            workdir / "registry.log")  # fmt: skip
    stand = DockerStand(workdir, host, f"127.0.0.1:{port}", BASE_IMAGE, dockerd, registry)
    try:
        _wait(lambda: stand.docker("version", check=False).returncode == 0, dockerd,
              workdir / "dockerd.log")  # fmt: skip
        with open(BASE_TAR, "rb") as tar:
            subprocess.run(["docker", "-H", host, "import", "-", BASE_IMAGE], stdin=tar,
                           capture_output=True, check=True, timeout=120)  # fmt: skip
        _wait(lambda: _answers(stand), registry, workdir / "registry.log")
    except BaseException:
        stand.stop()
        raise
    return stand


def _answers(stand: DockerStand) -> bool:
    try:
        stand.catalog()
    except OSError:
        return False
    return True


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited:\n{log_tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"{log.stem} not ready after {START_TIMEOUT_S}s:\n{log_tail(log)}")
