"""Budgets (daily and per job, per costs.budget_action) and the HTML export in Chromium."""

from __future__ import annotations

import json
import pwd
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from runctl.models import Job, JobState
from runctl.state.store import Store
from tests.conftest import CLI, job_id_of, need
from tests.fakes.lyceum_server import FakeLyceum
from tests.fakes.runpod_server import FakeRunpod
from tests.providers.aws.conftest import MotoAWS, created_id
from tests.resources.conftest import GPU, append_config, ok

RP = ("--platform", "runpod")


def test_daily_budget_warns_then_acts_per_policy(
    cli: CLI, pods: FakeRunpod, tmp_path: Path, runctl_home: Path
) -> None:
    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    none = ok(cli("resources", "enforce", "--json"))
    assert none["budgets"] == [] and none["actions"] == []
    append_config(tmp_path, "\n[costs]\ndaily_budget_usd = 0.00001\n")  # crossed at once

    warned = cli("resources", "enforce", "--json")
    data = ok(warned)
    assert data["action"] == "warn" and data["actions"] == []
    assert data["budgets"][0]["scope"] == "daily" and data["budgets"][0]["level"] == "over"
    assert "budget daily:" in warned.stderr and pods.pods[pod]["status"] == "RUNNING"
    assert any("budget daily" in w for w in ok(cli("status", "--json"))["costs"]["warnings"])

    dry = ok(cli("resources", "enforce", "--action", "terminate", "--dry-run", "--json"))
    assert dry["actions"] == [
        {"scope": "daily", "instance": f"runpod:{pod}", "action": "terminate",
         "result": "dry-run"}
    ]  # fmt: skip
    assert pod in pods.pods

    append_config(tmp_path, 'budget_action = "terminate"\n')
    acted = ok(cli("resources", "enforce", "--json"))
    assert [a["result"] for a in acted["actions"]] == ["terminated"]
    assert pod not in pods.pods
    assert Store.open(runctl_home / "state.db").get_instance_record("runpod", pod)["state"] == (
        "terminated"
    )
    bad = cli("resources", "enforce", "--action", "explode")
    assert bad.returncode == 2


def test_enforce_every_keeps_checking_until_interrupted(
    cli: CLI, pods: FakeRunpod, tmp_path: Path
) -> None:
    """--every: the daily budget is checked round after round (one JSON line each); the
    machine is terminated in the first round after the budget is crossed."""
    import signal

    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    proc = cli.popen("resources", "enforce", "--every", "0.2", "--json")
    assert proc.stdout is not None
    rounds: list[dict[str, Any]] = []
    try:
        for _ in range(3):  # no budget yet: rounds go by, the pod stays
            rounds.append(json.loads(proc.stdout.readline()))
        assert pod in pods.pods and all(r["budgets"] == [] for r in rounds)
        append_config(
            tmp_path, '\n[costs]\ndaily_budget_usd = 0.00001\nbudget_action = "terminate"\n'
        )
        deadline = time.monotonic() + 30
        # Each round prints its line once its actions are done; read until one terminated.
        while not any(a["result"] == "terminated" for a in rounds[-1]["actions"]):
            assert time.monotonic() < deadline and proc.poll() is None
            rounds.append(json.loads(proc.stdout.readline()))
        assert pod not in pods.pods
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    # Ctrl-C mid-round: that round's line may be cut short, never a traceback.
    assert "Traceback" not in err


def test_job_budget_is_recorded_and_checked(
    cli: CLI, pods: FakeRunpod, project: Path, runctl_home: Path
) -> None:
    job_id = job_id_of(cli("run", "--budget", "2.5", "hello.py", cwd=project))
    store = Store.open(runctl_home / "state.db")
    assert store.get_job(job_id).spec["budget_usd"] == 2.5
    assert cli("run", "--budget", "0", "hello.py", cwd=project).returncode == 2

    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    store.insert_job(Job(job_id="train-x-000001", name="train", project="p", provider="runpod",
                         instance_id=pod, state=JobState.RUNNING, argv=("t.py",), job_dir="d",
                         workdir="w", checkpoint_dir="c", created_at="2026-01-01T00:00:00Z",
                         started_at="2026-01-01T00:00:00Z",
                         spec={"budget_usd": 0.00001}))  # fmt: skip
    dry = ok(cli("resources", "enforce", "--action", "stop", "--dry-run", "--json"))
    (check,) = [b for b in dry["budgets"] if b["scope"] == "job:train-x-000001"]
    assert check["level"] == "over" and check["targets"] == [f"runpod:{pod}"]
    assert dry["actions"][0]["instance"] == f"runpod:{pod}"
    assert pods.pods[pod]["status"] == "RUNNING"


@pytest.mark.integration
def test_train_budget_on_every_cloud(
    cli: CLI,
    cli_fast: CLI,
    aws_ssh: MotoAWS,
    sshd: Any,
    pods_ssh: FakeRunpod,
    vms_ssh: FakeLyceum,
    project: Path,
    runctl_home: Path,
) -> None:
    """`--budget USD` on `aws train`, `runpod train` and `lyceum train`, as on `runctl run`."""
    (project / "sleepy.py").write_text("import time\ntime.sleep(120)\n")
    iid = created_id(cli_fast("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(iid, sshd)
    pod = ok(cli_fast("runpod", "create", "--gpu", GPU, "--json"))["id"]
    vm = ok(cli_fast("lyceum", "create", "--json"))["id"]
    trains = {
        "aws": ("aws", "train", iid, "--budget", "3"),
        "runpod": ("runpod", "train", "--pod-id", pod, "--budget", "2.5"),
        "lyceum": ("lyceum", "train", "--vm-id", vm, "--budget", "0.75"),
    }
    jobs = {k: ok(cli(*argv, "sleepy.py", "--json", cwd=project))["job_id"]
            for k, argv in trains.items()}  # fmt: skip
    store = Store.open(runctl_home / "state.db")
    limits = {k: store.get_job(j).spec["budget_usd"] for k, j in jobs.items()}
    assert limits == {"aws": 3.0, "runpod": 2.5, "lyceum": 0.75}
    checks = ok(cli_fast("resources", "enforce", "--action", "stop", "--dry-run", "--json"))
    scopes = {b["scope"]: b for b in checks["budgets"]}
    for cloud, job_id in jobs.items():
        assert scopes[f"job:{job_id}"]["limit_usd"] == limits[cloud]
        assert scopes[f"job:{job_id}"]["level"] == "ok"
    assert scopes[f"job:{jobs['runpod']}"]["targets"] == [f"runpod:{pod}"]
    for argv in trains.values():
        bad = cli(*argv[:-1], "0", "sleepy.py", cwd=project)
        assert bad.returncode == 2 and "--budget" in bad.stderr
    done = ok(cli_fast("resources", "cleanup", "--yes", "--json"))  # cancels the jobs first
    assert sorted(t["result"] for t in done["targets"]) == ["terminated"] * 3
    store = Store.open(runctl_home / "state.db")
    assert {store.get_job(j).state for j in jobs.values()} == {JobState.CANCELLED}


@pytest.mark.integration
def test_job_budget_holds_with_runctl_closed(
    cli: CLI, vms_ssh: FakeLyceum, sshd: Any, project: Path, tmp_path: Path, runctl_home: Path
) -> None:
    """`train --budget` on a priced VM arms its watchdog: once the budget is spent at the
    launch price the VM cancels the job and deletes itself, with no runctl running."""
    append_config(tmp_path, '\n[costs]\nbudget_action = "terminate"\n[watchdog]\ncheck_s = 0.2\n')
    (project / "sleepy.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    vm = ok(cli("lyceum", "create", "--json"))["id"]
    hourly = Store.open(runctl_home / "state.db").get_instance_record("lyceum", vm)
    budget = round(float(hourly["hourly_usd"]) * 2.0 / 3600, 6)  # two seconds of the VM
    started = cli("lyceum", "train", "--vm-id", vm, "--budget", str(budget), "sleepy.py",
                  cwd=project)  # fmt: skip
    assert started.returncode == 0 and "action terminate" in started.stderr, started.stderr
    job = job_id_of(started)
    deadline = time.monotonic() + 30
    while vms_ssh.vms[vm]["status"] != "terminated":  # nobody asked: the VM did it
        assert time.monotonic() < deadline, "the VM never deleted itself"
        time.sleep(0.1)
    # The "VM" is the loopback host: its job dir outlives the fake's record of the VM.
    job_dir = Path(Store.open(runctl_home / "state.db").get_job(job).job_dir)
    if not job_dir.is_absolute():
        job_dir = Path(pwd.getpwnam(sshd.user).pw_dir) / job_dir
    log = (job_dir / "log").read_text()
    assert "[runctl] watchdog: max-duration: stopping the job" in log, log
    state = json.loads((job_dir / "state.json").read_text())
    assert state["state"] == "cancelled"


# ------------------------------------------------------------------------ html in chromium


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG, scanline filters undone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 3
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    seen: set[bytes] = set()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], prev[i - channels] if i >= channels else 0
            line[i] = (
                line[i] + (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]
            ) & 255
        seen.update(bytes(line[x : x + 3]) for x in range(0, stride, channels * 8))
        prev = line
    return width, height, seen


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = _chromium()
    assert browser
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip


@pytest.mark.integration
def test_html_export_renders_its_charts_in_headless_chromium(
    cli: CLI, pods: FakeRunpod, tmp_path: Path
) -> None:
    need(None if _chromium() else "chromium is not installed (scripts/install-test-deps.sh)")
    for name in ("a", "b", "c"):
        ok(cli("runpod", "create", "--gpu", GPU, "--name", name, "--json"))
    page = tmp_path / "costs.html"
    done = cli("resources", "list", *RP, "--export", "html", "--export-file", str(page))
    assert done.returncode == 0, done.stderr

    dom = _run_chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert '<svg id="cost-over-time"' in dom.stdout and "<polyline" in dom.stdout
    assert dom.stdout.count('class="bar"') == 3

    shot = tmp_path / "out.png"
    done_shot = _run_chromium(f"--screenshot={shot}", "--window-size=1200,800", page.as_uri())
    assert shot.is_file(), done_shot.stderr
    width, height, colours = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 800)
    assert b"\xff\xff\xff" in colours  # the white page ...
    assert any(r < 60 and b > 150 for r, _, b in colours)  # ... with the blue cost bars
    assert len(colours) > 5
