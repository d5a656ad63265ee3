"""Dashboard fixtures: a populated state, a fake stoppable provider, stubbed host calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar

import pytest

from runctl import config
from runctl.errors import TransportError
from runctl.models import Host, Instance, InstanceState, Job, JobState, SSHTarget
from runctl.providers import REGISTRY
from runctl.providers.base import Provider, SupportsStop
from runctl.runtime import Runtime
from runctl.state.db import now_iso
from runctl.transport.base import Transport
from runctl.tui import data

TELEMETRY: dict[str, Any] = {
    "cpu_percent": 42.0,
    "load": [1.5, 1.25, 1.0],
    "memory": {"total_mb": 16384, "used_mb": 4096, "available_mb": 12288, "percent": 25.0},
    "disks": [{"filesystem": "/dev/sda1", "mount": "/", "size_gb": 100.0, "used_gb": 30.0,
               "percent": 30.0}],
    "gpus": [{"index": 0, "name": "NVIDIA A10G", "uuid": "GPU-1", "pstate": "P0",
              "util_percent": 87.0, "mem_util_percent": 40.0, "memory_total_mib": 23028.0,
              "memory_used_mib": 9120.0, "memory_free_mib": 13908.0, "temperature_c": 61.0,
              "power_w": None, "power_limit_w": 300.0, "sm_clock_mhz": 1710.0}],
    "gpu_status": "ok",
}  # fmt: skip
UNREACHABLE = {"ssh:gpu-box": "connection refused"}


class DemoProvider(Provider, SupportsStop):
    """A provider backed by a class-level live table (instance_id -> state)."""

    name = "demo"
    live: ClassVar[dict[str, InstanceState]] = {}

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def check(self) -> None:
        return None

    def get_instance(self, instance_id: str) -> Instance | None:
        state = self.live.get(instance_id)
        if state is None:
            return None
        return Instance(provider="demo", instance_id=instance_id, name=instance_id, state=state)

    def list_instances(self) -> list[Instance]:
        return [i for i in map(self.get_instance, self.live) if i is not None]

    def connect(self, instance: Instance) -> Transport:
        raise TransportError("demo instances have no shell")

    def stop_instance(self, instance_id: str) -> None:
        self.live[instance_id] = InstanceState.STOPPED

    def start_instance(self, instance_id: str) -> Instance:
        self.live[instance_id] = InstanceState.RUNNING
        found = self.get_instance(instance_id)
        assert found is not None
        return found

    def terminate_instance(self, instance_id: str) -> None:
        self.live.pop(instance_id, None)


@pytest.fixture
def rt(runctl_home: Path) -> Runtime:
    return Runtime(config=config.load(), home=config.home())


def _job(job_id: str, state: JobState, on: tuple[str, str], created: str, **kw: Any) -> Job:
    return Job(job_id=job_id, name=job_id.rsplit("-", 1)[0], project="demo",
               provider=on[0], instance_id=on[1], state=state,
               argv=("train.py", "--epochs", "3"), job_dir=f".runctl/jobs/{job_id}",
               workdir="", checkpoint_dir="", created_at=created, **kw)  # fmt: skip


@pytest.fixture
def populated(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Two demo instances (one running, one stopped), a host, and jobs in several states."""
    monkeypatch.setitem(REGISTRY, "demo", "tests.tui.conftest:DemoProvider")
    monkeypatch.setattr(DemoProvider, "live", {"i-gpu": InstanceState.RUNNING,
                                                "i-old": InstanceState.STOPPED})  # fmt: skip
    store = rt.store
    gpu = Instance(provider="demo", instance_id="i-gpu", name="i-gpu", hourly_usd=1.25,
                   extra={"instance_type": "g5.xlarge"})  # fmt: skip
    store.record_instance(gpu)
    store.record_instance(Instance(provider="demo", instance_id="i-old", name="i-old",
                                   state=InstanceState.STOPPED, hourly_usd=0.5))  # fmt: skip
    store.add_host(Host(name="gpu-box", target=SSHTarget(host="127.0.0.1", port=1),
                        hourly_usd=0.4))  # fmt: skip
    now = now_iso()
    store.insert_job(_job("train-aaa111", JobState.RUNNING, ("demo", "i-gpu"), now,
                          started_at=now))  # fmt: skip
    store.insert_job(_job("eval-bbb222", JobState.SUCCEEDED, ("ssh", "gpu-box"),
                          "2026-01-01T10:00:00.000Z", started_at="2026-01-01T10:00:00.000Z",
                          ended_at="2026-01-01T10:05:00.000Z", exit_code=0))  # fmt: skip
    store.insert_job(_job("prep-ccc333", JobState.FAILED, ("local", "local"),
                          "2026-01-01T09:00:00.000Z", exit_code=3))  # fmt: skip
    return rt


class Stubs:
    """Replaces the blocking host calls in ``runctl.tui.data``; ``gate`` holds them back."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.probes: list[str] = []
        self.refreshes = 0

    def probe(self, runtime: Runtime, provider: str, instance_id: str) -> dict[str, Any]:
        assert self.gate.wait(30), "test never released the gate"
        self.probes.append(f"{provider}:{instance_id}")
        if f"{provider}:{instance_id}" in UNREACHABLE:
            raise TransportError("connection refused")
        return TELEMETRY

    def refresh_jobs(
        self, runtime: Runtime, lines: dict[str, str] | None = None
    ) -> dict[str, str]:
        assert self.gate.wait(30), "test never released the gate"
        self.refreshes += 1
        return dict(UNREACHABLE)

    def last_lines(self, runtime: Runtime, job_ids: list[str]) -> dict[str, str]:
        return {j: f"epoch 3/3 of {j}" for j in job_ids}


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> Stubs:
    found = Stubs()
    monkeypatch.setattr(data, "probe", found.probe)
    monkeypatch.setattr(data, "refresh_jobs", found.refresh_jobs)
    monkeypatch.setattr(data, "last_lines", found.last_lines)
    return found


def run_async(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async Pilot test body on a fresh event loop (no async pytest plugin needed)."""
    asyncio.run(test())


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await pilot.pause(0.05)
