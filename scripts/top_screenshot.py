"""Render ``runctl top`` over a demo state into an SVG (default: docs/top.svg).

Usage: python scripts/top_screenshot.py [OUT.svg]

The state lives in a throw-away RUNCTL_HOME; the calls that would reach hosts (job refresh,
last log lines, telemetry probes) answer with fixed demo data, so no network is used and the
picture is reproducible apart from the clock.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SIZE = (150, 44)

GPU = {"index": 0, "uuid": "GPU-0", "pstate": "P0", "mem_util_percent": 40.0,
       "memory_free_mib": 0.0, "power_limit_w": 300.0, "sm_clock_mhz": 1710.0}  # fmt: skip


def _telemetry(cpu: float, load: float, used_gb: float, total_gb: float,
               gpus: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    return {
        "cpu_percent": cpu,
        "load": [load, load * 0.9, load * 0.8],
        "memory": {"total_mb": int(total_gb * 1024), "used_mb": int(used_gb * 1024),
                   "available_mb": int((total_gb - used_gb) * 1024), "percent": None},
        "disks": [{"filesystem": "/dev/root", "mount": "/", "size_gb": 200.0, "used_gb": 71.0,
                   "percent": 35.5}],
        "gpus": gpus,
        "gpu_status": "ok" if gpus else "no GPU",
    }  # fmt: skip


def _gpu(index: int, name: str, util: float, used: float, total: float, temp: float,
         power: float | None) -> dict[str, Any]:  # fmt: skip
    return {**GPU, "index": index, "name": name, "util_percent": util, "memory_used_mib": used,
            "memory_total_mib": total, "temperature_c": temp, "power_w": power}  # fmt: skip


DEMO_TELEMETRY = {
    "local:local": _telemetry(12.0, 0.8, 9.6, 31.2, []),
    "ssh:gpu-box": _telemetry(
        96.0, 7.9, 41.0, 62.7,
        [_gpu(0, "NVIDIA RTX 3090", 99, 21870, 24576, 74, 341.5),
         _gpu(1, "NVIDIA RTX 3090", 97, 21544, 24576, 71, 329.0)],
    ),
    "aws:i-0f3a9c2e7b41d5a60": _telemetry(
        88.0, 4.1, 11.3, 15.3, [_gpu(0, "NVIDIA A10G", 93, 18342, 23028, 63, None)]
    ),
    "runpod:7xq2mz0k4wpa1": _telemetry(
        71.0, 3.2, 30.5, 125.0, [_gpu(0, "NVIDIA GeForce RTX 4090", 84, 15120, 24564, 58, 288.2)]
    ),
}  # fmt: skip

LAST_LINES = {
    "train-resnet-4be1a9": "epoch 7/30  step 1840/2500  loss 0.412  acc 0.871  2.3 it/s",
    "train-llama-lora-c0ffee": "step 1200/5000  loss 1.873  lr 1.8e-4  tokens/s 3150",
    "sweep-lr-3e-4-91d2aa": "epoch 2/10  val_loss 0.655",
    "eval-resnet-5a5a5a": "top1 0.874  top5 0.981  -> outputs/metrics.json",
    "prep-data-77e0b1": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
}


def _populate(home: Path, now: datetime) -> None:
    from runctl import config
    from runctl.models import Host, Instance, InstanceState, Job, JobState, SSHTarget
    from runctl.runtime import Runtime

    rt = Runtime(config=config.load(), home=home)
    store = rt.store

    def at(hours: float) -> str:
        return (now - timedelta(hours=hours)).isoformat(timespec="seconds").replace("+00:00", "Z")

    machines = [
        ("aws", "i-0f3a9c2e7b41d5a60", "runctl-a10g", 1.006, {"instance_type": "g5.xlarge"},
         [("pending", 5.2), ("running", 5.15)]),
        ("runpod", "7xq2mz0k4wpa1", "runctl-4090", 0.69, {"gpu": "RTX 4090"},
         [("running", 2.5)]),
        ("aws", "i-0a1b2c3d4e5f60718", "runctl-cpu", 0.17, {"instance_type": "c7i.xlarge"},
         [("running", 9.0), ("stopped", 6.0)]),
        ("lyceum", "vm-5f2e", "runctl-h100", 2.49, {"profile": "h100"},
         [("running", 30.0), ("terminated", 27.0)]),
    ]  # fmt: skip
    for provider, instance_id, name, hourly, extra, history in machines:
        rid = store.record_instance(Instance(provider=provider, instance_id=instance_id,
                                             name=name, state=InstanceState(history[-1][0]),
                                             hourly_usd=hourly, extra=extra))  # fmt: skip
        store.db.execute("DELETE FROM instance_states WHERE resource_id = ?", (rid,))
        for state, hours in history:
            store.db.execute("INSERT INTO instance_states VALUES (?, ?, ?)",
                             (rid, state, at(hours)))  # fmt: skip
    store.add_host(Host(name="gpu-box", target=SSHTarget(host="gpu-box.lan", user="ml"),
                        hourly_usd=0.35))  # fmt: skip
    jobs = [
        ("train-llama-lora-c0ffee", "ssh", "gpu-box", JobState.RUNNING, 3.1, None, None),
        ("train-resnet-4be1a9", "aws", "i-0f3a9c2e7b41d5a60", JobState.RUNNING, 4.9, None, None),
        ("sweep-lr-3e-4-91d2aa", "runpod", "7xq2mz0k4wpa1", JobState.RUNNING, 0.6, None, None),
        ("eval-resnet-5a5a5a", "aws", "i-0a1b2c3d4e5f60718", JobState.SUCCEEDED, 7.0, 6.6, 0),
        ("prep-data-77e0b1", "local", "local", JobState.FAILED, 8.0, 7.9, 1),
    ]  # fmt: skip
    for job_id, provider, instance_id, state, started, ended, code in jobs:
        store.insert_job(Job(
            job_id=job_id, name=job_id.rsplit("-", 1)[0], project="vision", provider=provider,
            instance_id=instance_id, state=state, argv=("train.py",), job_dir="",
            workdir="", checkpoint_dir="", created_at=at(started), started_at=at(started),
            ended_at=at(ended) if ended is not None else None, exit_code=code,
        ))  # fmt: skip


async def _shoot(out: Path) -> None:
    from runctl import config
    from runctl.runtime import Runtime
    from runctl.tui import data
    from runctl.tui.app import DashboardApp

    data.refresh_jobs = lambda runtime, lines=None: {}
    data.last_lines = lambda runtime, job_ids: {j: LAST_LINES.get(j, "") for j in job_ids}
    data.probe = lambda runtime, provider, instance_id: DEMO_TELEMETRY[f"{provider}:{instance_id}"]
    rt = Runtime(config=config.load(), home=config.home())
    app = DashboardApp(rt, interval_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        while len(app.snapshot.telemetry) < len(DEMO_TELEMETRY) or app.refreshed_at is None:
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        app.save_screenshot(out.name, path=str(out.parent))
        await pilot.press("q")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else REPO / "docs" / "top.svg").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RUNCTL_HOME"] = str(Path(tmp) / "home")
        os.environ["RUNCTL_CONFIG"] = str(Path(tmp) / "config.toml")
        Path(tmp, "config.toml").write_text("[costs]\ndaily_budget_usd = 50\n")
        os.chdir(tmp)  # no project .runctl.toml leaks in
        _populate(Path(tmp) / "home", datetime.now(UTC))
        asyncio.run(_shoot(out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
