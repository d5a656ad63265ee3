"""Stands for recovery and workflow tests: moto EC2 whose instances are netns hosts.

A moto instance is only an API record; the ``runctl:ssh-endpoint`` tag makes it a machine.
``Tagger`` (a thread) gives every new runctl instance an endpoint as soon as it exists, and
``Chaos`` additionally plays AWS reclaiming spot instances: once the job on the current
machine has written a new checkpoint it raises a spot notice on that host's metadata service
(tests/fakes/imds.py inside the namespace at 169.254.169.254:80), waits until the agent has
ended the job ``preempted`` and the instance is terminated, then "loses" the machine: kills
every process it ran and wipes runctl's directory (both namespaces share this disk, so a new
machine would otherwise find the old one's files). Only then is the next instance given an
endpoint, so the old machine is gone before the new one is reachable.

The checkpoint store is a SeaweedFS bound to rhost31's veth peer (10.213.31.1), which both
hosts reach (tests/stands/netns_link.py routes rhost32 there).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, need
from tests.fakes.fixtures import runpod_fake  # noqa: F401
from tests.providers.aws.conftest import MotoAWS, aws_ssh, moto_aws, moto_endpoint  # noqa: F401

TORCH_PYTHON = Path("/opt/runctl-test-torch/bin/python")
HOST_CLI = Path("/opt/runctl-test-awscli/bin/aws")
IMDS_ADDRESS = "169.254.169.254"
INDICES = (31, 32)
IP = "/usr/sbin/ip"
ALIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]

# A small real torch job: a checkpoint every --every steps (atomic: temporary file + rename,
# the newest two kept), resumed from $RUNCTL_RESUME_FROM, one log line per step. It ends
# after --max-steps, or as soon as --done-file exists. SIGTERM kills it (no save on the way
# out), so an interruption loses the steps since the last checkpoint.
TRAIN = """#!{python}
import argparse, json, os, pathlib, time
import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--every", type=int, default=10)
p.add_argument("--step-s", type=float, default=0.05)
p.add_argument("--max-steps", type=int, default=10**9)
p.add_argument("--done-file", default="")
args = p.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)
ckpts = pathlib.Path(os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints")
ckpts.mkdir(parents=True, exist_ok=True)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(256, 16)
y = (x[:, 0] > 0).long()
step = 0
resume = os.environ.get("RUNCTL_RESUME_FROM")
if resume:
    state = torch.load(resume, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    step = int(state["step"])
    print(f"resumed from step {{step}} ({{pathlib.Path(resume).name}})", flush=True)
else:
    print("fresh start", flush=True)


def save(n):
    path = ckpts / f"ckpt_step_{{n:06d}}.pt"
    tmp = ckpts / f".{{path.name}}.tmp"
    torch.save({{"model": model.state_dict(), "opt": opt.state_dict(), "step": n}}, tmp)
    os.replace(tmp, path)
    for old in sorted(ckpts.glob("ckpt_step_*.pt"))[:-2]:
        old.unlink()
    print(f"saved step {{n}}", flush=True)


loss_fn = nn.CrossEntropyLoss()
loss = torch.tensor(0.0)
while step < args.max_steps and not (args.done_file and os.path.exists(args.done_file)):
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step += 1
    print(f"step {{step}} loss={{loss.item():.4f}}", flush=True)
    if step % args.every == 0:
        save(step)
    time.sleep(args.step_s)
out = pathlib.Path(os.environ.get("RUNCTL_OUTPUT_DIR") or "outputs")
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({{"steps": step, "loss": loss.item()}}))
print(f"done at step {{step}}", flush=True)
"""

# A plain (torch-free) job for the workflow tests: N steps, then outputs/metrics.json.
COUNT = """import json, os, pathlib, sys, time
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for i in range(1, steps + 1):
    print(f"step {i}", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.01)
out = pathlib.Path(os.environ["RUNCTL_OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"steps": steps}))
print("done", flush=True)
"""

_SAVED = re.compile(r"^saved step (\d+)$", re.MULTILINE)
_STEP = re.compile(r"^step (\d+) ", re.MULTILINE)
_RESUMED = re.compile(r"^resumed from step (\d+) ", re.MULTILINE)
# the AWS CLI's line for each file the agent copies to the checkpoint store
_UPLOADED = re.compile(r"^upload: \S*ckpt_step_(\d+)\.pt to s3://", re.MULTILINE)


def torch_reason() -> str | None:
    return None if TORCH_PYTHON.exists() else f"no torch interpreter at {TORCH_PYTHON}"


def write_train(project: Path) -> Path:
    """The training job as an executable in ``project`` (shebang: the test torch python)."""
    path = project / "train_spot"
    path.write_text(TRAIN.format(python=TORCH_PYTHON))
    path.chmod(0o755)
    return path


def steps_of(log: str) -> dict[str, Any]:
    """What a job log says: resumed-from step, checkpoints saved and copied to the store,
    the last step reached."""
    resumed = _RESUMED.search(log)
    return {
        "resumed": int(resumed.group(1)) if resumed else None,
        "saved": [int(s) for s in _SAVED.findall(log)],
        "uploaded": [int(s) for s in _UPLOADED.findall(log)],
        "last": max((int(s) for s in _STEP.findall(log)), default=None),
    }


def write_config(stand: MotoAWS, **sections: dict[str, Any]) -> None:
    """Merge ``sections`` (``aws={...}``, ``s3={...}``) into the user config moto_aws wrote."""
    import tomllib

    import tomli_w

    data = tomllib.loads(stand.config_file.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    stand.config_file.write_text(tomli_w.dumps(data))


def events(home: Path, prefix: str = "") -> list[dict[str, Any]]:
    """Every event in the state database under ``home`` (kind starting with ``prefix``)."""
    from runctl.state.store import Store

    store = Store.open(home / "state.db")
    try:
        return [e for e in store.list_events() if e["kind"].startswith(prefix)]
    finally:
        store.db.close()


# ----------------------------------------------------------------------------- tagger


@dataclass(eq=False)  # threads must stay hashable
class Tagger(threading.Thread):
    """Gives each new runctl instance in moto an SSH endpoint (cycling through ``endpoints``)
    and records how many runctl instances were alive at once."""

    aws: MotoAWS
    endpoints: list[str]
    poll_s: float = 0.05
    mapped: dict[str, str] = field(default_factory=dict)
    max_alive: int = 0
    error: BaseException | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True, name=type(self).__name__)
        self.ec2 = self.aws.client("ec2")

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.tick()
                time.sleep(self.poll_s)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def alive(self) -> list[dict[str, Any]]:
        found = self.ec2.describe_instances(Filters=[
            {"Name": "tag:runctl:managed", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": ALIVE},
        ])  # fmt: skip
        return [i for r in found["Reservations"] for i in r["Instances"]]

    def tick(self) -> None:
        alive = self.alive()
        self.max_alive = max(self.max_alive, len(alive))
        for raw in alive:
            if raw["InstanceId"] not in self.mapped and self.may_map():
                self.map(raw["InstanceId"])

    def may_map(self) -> bool:
        return True

    def map(self, instance_id: str) -> str:
        endpoint = self.endpoints[len(self.mapped) % len(self.endpoints)]
        self.ec2.create_tags(Resources=[instance_id],
                             Tags=[{"Key": "runctl:ssh-endpoint", "Value": endpoint}])  # fmt: skip
        self.mapped[instance_id] = endpoint
        return endpoint

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error


# ------------------------------------------------------------------------ spot stand


@dataclass
class SpotStand:
    hosts: list[Any]  # NetnsHost
    imds: dict[str, Path]  # host name -> the fake's state file
    imds_procs: dict[str, subprocess.Popen[bytes]]
    seaweed: Any  # SeaweedStand on 10.213.31.1
    user_home: Path

    def notice(self, host: Any, action: str = "terminate") -> None:
        """Publish a spot interruption notice on ``host``'s metadata service."""
        from tests.fakes.imds import iso_in

        _write(self.imds[host.name], {"instance_action": {"action": action, "time": iso_in(120)}})

    def clear(self, host: Any) -> None:
        _write(self.imds[host.name], {})

    def lose(self, host: Any, remote_dir: str) -> None:
        """The machine is gone: kill what it ran (not its sshd, not the metadata fake) and
        wipe runctl's directory, as a fresh machine would have none."""
        keep = {host.proc.pid, self.imds_procs[host.name].pid}
        out = subprocess.run([IP, "netns", "pids", host.name], capture_output=True, text=True,
                             check=False).stdout  # fmt: skip
        for pid in (int(p) for p in out.split() if p.isdigit()):
            if pid not in keep:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.clear(host)
        shutil.rmtree(self.user_home / remote_dir, ignore_errors=True)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


@pytest.fixture(scope="module")
def spot_stand(sshd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpotStand]:
    """rhost31 and rhost32 with fake metadata services, and S3 both of them reach."""
    from tests.stands.netns import NetnsHostBusy, netns_available, start_netns_host
    from tests.stands.netns_link import link_hosts
    from tests.stands.seaweed import seaweed_available, start_seaweed

    need(netns_available())
    need(torch_reason())
    need(None if HOST_CLI.exists() else f"no AWS CLI at {HOST_CLI}")
    need(seaweed_available())
    workdir = tmp_path_factory.mktemp("spot")
    hosts: list[Any] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    weed = None
    try:
        for index in INDICES:
            try:
                hosts.append(start_netns_host(sshd, index))
            except NetnsHostBusy as exc:
                pytest.skip(f"netns host {index} is in use by another run: {exc}")
        link_hosts(hosts)
        imds: dict[str, Path] = {}
        for host in hosts:
            imds[host.name] = workdir / f"imds-{host.name}.json"
            _write(imds[host.name], {})
            procs[host.name] = _start_imds(host.name, imds[host.name], workdir)
        weed = start_seaweed(workdir / "weed", bind=f"10.213.{INDICES[0]}.1")
        home = Path(pwd.getpwnam(sshd.user).pw_dir)
        yield SpotStand(hosts, imds, procs, weed, home)
    finally:
        if weed is not None:
            weed.stop()
        for host in hosts:
            host.stop()
        for proc in procs.values():
            proc.kill()
            proc.wait()


def _start_imds(netns: str, state: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """The fake metadata service inside ``netns`` at 169.254.169.254:80."""
    subprocess.run([IP, "netns", "exec", netns, IP, "addr", "add", f"{IMDS_ADDRESS}/32",
                    "dev", "lo"], check=True, capture_output=True)  # fmt: skip
    log = workdir / f"imds-{netns}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [IP, "netns", "exec", netns, sys.executable, str(REPO / "tests" / "fakes" / "imds.py"),
             "--bind", IMDS_ADDRESS, "--port", "80", "--state-file", str(state)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while "fake IMDS on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"fake IMDS in {netns} did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc


# ------------------------------------------------------------------------------ chaos


@dataclass(eq=False)
class Chaos(Tagger):
    """Interrupts the machine ``interruptions`` times (see the module docstring), then writes
    ``done_file`` once the last machine has checkpointed, so that the job finishes.

    ``mode="vanish"``: no notice; once a checkpoint has reached the store (the periodic copy
    logged it) the instance is terminated and the machine lost at once.
    """

    stand: SpotStand | None = None
    remote_dir: str = ""
    interruptions: int = 1
    done_file: Path | None = None
    logs: list[str] = field(default_factory=list)  # each interrupted job's log, in order
    mode: str = "notice"  # or "vanish": no notice, the instance is terminated at once
    preempted_wait_s: float = 60.0
    host_of: dict[str, Any] = field(default_factory=dict)
    current: str | None = None
    phase: str = "idle"
    deadline: float = 0.0
    cycle_times: list[float] = field(default_factory=list)
    _cycle_started: float = 0.0

    def may_map(self) -> bool:
        return self.current is None

    def map(self, instance_id: str) -> str:
        endpoint = super().map(instance_id)
        assert self.stand is not None
        self.host_of[instance_id] = next(h for h in self.stand.hosts if h.address == endpoint)
        self.current = instance_id
        self.phase = "checkpoint"
        self._cycle_started = self._cycle_started or time.monotonic()
        return endpoint

    def tick(self) -> None:
        if self.current is not None:
            self.step()
        super().tick()

    def job_dir(self) -> Path | None:
        assert self.stand is not None
        found = sorted((self.stand.user_home / self.remote_dir / "jobs").glob("*/log"))
        return found[-1].parent if found else None

    def step(self) -> None:
        assert self.stand is not None and self.current is not None
        host = self.host_of[self.current]
        job_dir = self.job_dir()
        log = (job_dir / "log").read_text(errors="replace") if job_dir else ""
        if self.phase == "checkpoint" and _SAVED.search(log):
            if len(self.logs) >= self.interruptions:
                assert self.done_file is not None
                self.done_file.write_text("done\n")
                self.phase = "finishing"
            elif self.mode == "vanish":
                if _UPLOADED.search(log):
                    self.logs.append(log)
                    self.ec2.terminate_instances(InstanceIds=[self.current])
                    self._lose(host)
            else:
                self.stand.notice(host)
                self.phase = "preempting"
                self.deadline = time.monotonic() + self.preempted_wait_s
        elif self.phase == "preempting":
            state = _read_state(job_dir)
            if state == "preempted":
                self.logs.append(log)
                self.phase = "reclaiming"
                self.deadline = time.monotonic() + 10  # AWS reclaims it if runctl does not
            elif time.monotonic() > self.deadline:
                raise AssertionError(f"job not preempted within {self.preempted_wait_s}s:\n{log}")
        elif self.phase == "reclaiming":
            raw = self.aws.instance(self.current)
            if raw["State"]["Name"] == "terminated" or time.monotonic() > self.deadline:
                self.ec2.terminate_instances(InstanceIds=[self.current])
                self._lose(host)

    def _lose(self, host: Any) -> None:
        assert self.stand is not None
        self.stand.lose(host, self.remote_dir)
        now = time.monotonic()
        self.cycle_times.append(now - self._cycle_started)
        self._cycle_started = now
        self.current = None
        self.phase = "idle"


def _read_state(job_dir: Path | None) -> str | None:
    if job_dir is None:
        return None
    try:
        state: dict[str, Any] = json.loads((job_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state.get("state")
