"""Multi-node jobs on an SSH host group: two netns hosts, torch.distributed over gloo (CPU)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of, need

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]
TORCH_PYTHON = "/opt/runctl-test-torch/bin/python"
INDICES = (21, 22)

DIST = """
import datetime, os, socket, subprocess, sys
import torch
import torch.distributed as dist

rank = int(os.environ["RUNCTL_NODE_RANK"])
me = os.environ["RUNCTL_NODE_IPS"].split(",")[rank]
# gloo binds to the interface holding this node's address (the hostname does not resolve).
addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
for line in addrs.splitlines():
    if f" {me}/" in line:
        os.environ["GLOO_SOCKET_IFNAME"] = line.split()[1]
dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
master = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
print(f"rank={dist.get_rank()} world={dist.get_world_size()} sum={value.item():g} "
      f"host={socket.gethostname()} master={master}", flush=True)
dist.destroy_process_group()
if "--fail-rank" in sys.argv and rank == int(sys.argv[sys.argv.index("--fail-rank") + 1]):
    sys.exit(4)
"""


@pytest.fixture(scope="module")
def netns_pair(sshd: object) -> Iterator[list[object]]:
    """rhost21 and rhost22, routed to each other (tests/stands/netns_link.py)."""
    from tests.stands.netns import NetnsHostBusy, netns_available, start_netns_host
    from tests.stands.netns_link import link_hosts

    need(netns_available())
    need(None if Path(TORCH_PYTHON).exists() else f"no torch interpreter at {TORCH_PYTHON}")
    hosts = []
    try:
        for index in INDICES:
            try:
                hosts.append(start_netns_host(sshd, index))  # type: ignore[arg-type]
            except NetnsHostBusy as exc:
                pytest.skip(f"netns host {index} is in use by another run: {exc}")
        link_hosts(hosts)
        yield hosts
    finally:
        for host in hosts:
            host.stop()  # type: ignore[attr-defined]


@pytest.fixture
def group(cli: CLI, ssh_config: Path, netns_pair: list[object]) -> str:
    """The two hosts registered with the torch interpreter; ``--on ssh:<group>``."""
    stamp = time.time_ns()
    for host in netns_pair:
        # Both namespaces share this machine's disk: give each "node" its own dir.
        done = cli("hosts", "add", host.name, "--python", TORCH_PYTHON,  # type: ignore[attr-defined]
                   "--remote-dir", f".runctl-mn{host.index}-{stamp}")  # type: ignore[attr-defined]  # fmt: skip
        assert done.returncode == 0, done.stderr
    return ",".join(h.name for h in netns_pair)  # type: ignore[attr-defined]


def test_two_node_gloo_all_reduce(cli: CLI, project: Path, group: str) -> None:
    (project / "dist.py").write_text(DIST)
    done = cli("run", "--on", f"ssh:{group}", "--no-install-deps", "dist.py", cwd=project)
    job = job_id_of(done)
    assert "rank 1 started on rhost22 (10.213.22.2)" in done.stderr
    waited = cli("wait", job, "--json", timeout=120)
    assert waited.returncode == 0, waited.stderr + cli("logs", job).stdout
    assert json.loads(waited.stdout)["state"] == "succeeded"
    rank0 = cli("logs", job).stdout
    assert "rank=0 world=2 sum=3 host=rhost21" in rank0
    assert "master=10.213.21.2:" in rank0
    assert "rank=1 world=2 sum=3 host=rhost22" in cli("logs", job, "--node", "1").stdout
    assert cli("logs", job, "--node", "2").returncode != 0
    # A failing rank fails the group even though rank 0 succeeded.
    bad = job_id_of(cli("run", "--on", f"ssh:{group}", "--no-install-deps", "dist.py", "--",
                        "--fail-rank", "1", cwd=project))  # fmt: skip
    assert cli("wait", bad, timeout=120).returncode == 4


def test_torchrun_works_unchanged(cli: CLI, project: Path, group: str) -> None:
    (project / "dist.py").write_text(DIST)
    # Exactly what a user would run on one machine: torchrun with no node options.
    (project / "launch.py").write_text(
        "import subprocess, sys\n"
        "sys.exit(subprocess.call([sys.executable, '-m', 'torch.distributed.run',"
        " '--nproc-per-node', '1', 'dist.py']))\n"
    )
    job = job_id_of(cli("run", "--on", f"ssh:{group}", "--no-install-deps", "launch.py",
                        cwd=project))  # fmt: skip
    waited = cli("wait", job, timeout=180)
    assert waited.returncode == 0, waited.stderr + cli("logs", job).stdout
    assert "rank=0 world=2 sum=3 host=rhost21" in cli("logs", job).stdout
    assert "rank=1 world=2 sum=3 host=rhost22" in cli("logs", job, "--node", "1").stdout


def test_cancel_covers_every_rank(cli: CLI, project: Path, group: str) -> None:
    job = job_id_of(cli("run", "--on", f"ssh:{group}", "hello.py", "--", "--lines", "300",
                        "--interval", "0.1", cwd=project))  # fmt: skip
    deadline = time.monotonic() + 30
    while "line 2" not in cli("logs", job, "--node", "1").stdout:
        assert time.monotonic() < deadline, "rank 1 never started"
        time.sleep(0.2)
    done = cli("cancel", job, "--json", "--grace", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    rank1 = cli("logs", job, "--node", "1").stdout
    time.sleep(0.5)
    assert cli("logs", job, "--node", "1").stdout == rank1  # rank 1 stopped too
    assert "line 300" not in rank1
