"""``runctl runpod`` end to end: the real CLI, the fake RunPod API, pods mapped to a real sshd."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runctl.state.store import Store
from tests.conftest import CLI, job_id_of, wait_for_log
from tests.fakes.fixtures import remote_dir, write_user_config
from tests.fakes.runpod_server import FakeRunpod
from tests.stands.sshd import SSHStand

GPU = "NVIDIA GeForce RTX 4090"


def _config(fake: FakeRunpod, tmp_path: Path, extra: str = "") -> None:
    write_user_config(
        tmp_path,
        f"""
[runpod]
api_url = "{fake.rest_url}"
graphql_url = "{fake.graphql_url}"
poll_interval_s = 0.01
{extra}
""",
    )


@pytest.fixture
def pods(runpod_fake: FakeRunpod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRunpod:
    """The fake API with its key in the environment (no sshd)."""
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_fake.api_key)
    _config(runpod_fake, tmp_path)
    return runpod_fake


@pytest.fixture
def pods_ssh(
    runpod_fake: FakeRunpod, sshd: SSHStand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeRunpod:
    """Pods whose public SSH endpoint is the loopback sshd stand (user runctltest)."""
    runpod_fake.ssh_port = sshd.port
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_fake.api_key)
    _config(
        runpod_fake,
        tmp_path,
        f"""
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key}"
remote_dir = "{remote_dir("rp")}"
""",
    )
    return runpod_fake


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _store(home: Path) -> Store:
    return Store.open(home / "state.db")


@pytest.mark.integration
def test_pod_lifecycle_with_jobs_over_ssh(
    cli: CLI,
    pods_ssh: FakeRunpod,
    sshd: SSHStand,
    project: Path,
    tmp_path: Path,
    runctl_home: Path,
) -> None:
    created = _ok(cli("runpod", "create", "--gpu", GPU, "--name", "exp1", "--json"))
    pod = created["id"]
    assert created["name"].startswith("runctl-exp1-") and created["state"] == "running"
    assert created["ssh"]["port"] == sshd.port and created["ssh"]["user"] == sshd.user
    assert created["hourly_usd"] == 0.44  # the 4090's secure price, captured at launch
    (sent,) = pods_ssh.seen("POST /v2/pods")
    assert sent.body["env"]["PUBLIC_KEY"] == Path(f"{sshd.key}.pub").read_text().strip()
    assert [p["id"] for p in _ok(cli("runpod", "list", "--json"))] == [pod]

    done = cli(
        "runpod",
        "train",
        "--pod-id",
        pod,
        "--follow",
        "hello.py",
        "--",
        "a b",
        "$HOME",
        "--lines",
        "2",
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["arg: 'a b'", "arg: '$HOME'"]
    assert done.stdout.splitlines()[-1] == "line 2"

    (project / "writer.py").write_text(
        "import os, pathlib\npathlib.Path('result.txt').write_text('42\\n')\n"
        "out = pathlib.Path(os.environ['RUNCTL_OUTPUT_DIR'])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text('{\"loss\": 0.1}')\nprint('wrote', flush=True)\n"
    )
    job = job_id_of(cli("run", "--on", f"runpod:{pod}", "--wait", "writer.py", cwd=project))
    monitor = cli("runpod", "monitor", "--pod-id", pod)
    assert monitor.returncode == 0 and monitor.stdout == "wrote\n", monitor.stderr
    got = _ok(
        cli(
            "runpod",
            "download",
            "--pod-id",
            pod,
            "--job",
            job,
            "--remote",
            "outputs/metrics.json",
            "--local",
            str(tmp_path / "m.json"),
            "--json",
        )
    )
    assert json.loads(Path(got["dest"]).read_text()) == {"loss": 0.1}
    base = pods_ssh_remote_dir(runctl_home)
    _ok(
        cli(
            "runpod",
            "download",
            "--pod-id",
            pod,
            "--remote",
            f"{base}/code/proj/current",
            "--local",
            str(tmp_path / "code"),
            "--json",
        )
    )
    assert (tmp_path / "code" / "result.txt").read_text() == "42\n"

    (project / "sleepy.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    sleepy = job_id_of(cli("runpod", "train", "--pod-id", pod, "sleepy.py", cwd=project))
    wait_for_log(cli, sleepy, "ready")
    refused = cli("runpod", "stop", "--pod-id", pod)
    assert refused.returncode == 9 and sleepy in refused.stderr and "--force" in refused.stderr
    assert cli("cancel", sleepy, "--grace", "1").returncode == 0
    assert _ok(cli("runpod", "stop", "--pod-id", pod, "--json"))["state"] == "stopped"
    assert _ok(cli("runpod", "status", "--pod-id", pod, "--json"))["status"] == "EXITED"
    resumed = _ok(cli("runpod", "resume", "--pod-id", pod, "--json"))
    assert resumed["state"] == "running" and pods_ssh.seen("POST /v2/pods/{id}/action")

    assert _ok(cli("runpod", "terminate", "--pod-id", pod, "--json"))["terminated"] is True
    assert _ok(cli("runpod", "list", "--json")) == []
    assert cli("runpod", "terminate", "--pod-id", pod).returncode == 0  # idempotent
    record = _store(runctl_home).get_instance_record("runpod", pod)
    assert record is not None and record["hourly_usd"] == 0.44 and record["state"] == "terminated"
    states = [s for s, _ in _store(runctl_home).instance_history(record["resource_id"])]
    assert states[0] == "pending" and "stopped" in states and states[-1] == "terminated"


def pods_ssh_remote_dir(home: Path) -> str:
    import tomllib

    cfg = tomllib.loads((home.parent / "xdg-config" / "runctl" / "config.toml").read_text())
    return str(cfg["runpod"]["remote_dir"])


def test_spot_pod_bids_the_minimum_and_resumes_with_a_new_bid(
    cli: CLI, pods: FakeRunpod, runctl_home: Path
) -> None:
    created = _ok(cli("runpod", "create", "--gpu", GPU, "--spot", "--no-wait", "--json"))
    pod = created["id"]
    (sent,) = pods.seen("graphql rentSpotPod")
    assert sent.body["variables"]["input"]["bidPerGpu"] == 0.2  # minimumBidPrice
    assert created["spot"] is True and created["hourly_usd"] == 0.2
    assert _ok(cli("runpod", "status", "--pod-id", pod, "--wait", "--json"))["state"] == "running"
    _ok(cli("runpod", "stop", "--pod-id", pod, "--json"))
    resumed = _ok(cli("runpod", "resume", "--pod-id", pod, "--bid", "0.3", "--no-wait", "--json"))
    assert resumed["spot"] is True
    (bid,) = pods.seen("graphql bidResumePod")
    assert bid.body["variables"]["bidPerGpu"] == 0.3
    record = _store(runctl_home).get_instance_record("runpod", pod)
    assert record is not None and record["hourly_usd"] == 0.2  # launch price kept


def test_resume_with_zero_gpus_warns(cli: CLI, pods: FakeRunpod) -> None:
    pod = _ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    _ok(cli("runpod", "stop", "--pod-id", pod, "--json"))
    pods.zero_gpus_on_resume = True
    done = cli("runpod", "resume", "--pod-id", pod, "--json")
    assert _ok(done)["gpu_count"] == 0 and "zero GPUs" in done.stderr


def test_create_answering_500_after_creating_is_not_duplicated(cli: CLI, pods: FakeRunpod) -> None:
    pods.inject(
        "POST /v2/pods", 500, {"title": "Internal Server Error", "detail": "timeout"}, after=True
    )
    created = _ok(cli("runpod", "create", "--gpu", GPU, "--no-wait", "--json"))
    assert list(pods.pods) == [created["id"]] and len(pods.seen("POST /v2/pods")) == 1


def test_no_capacity_is_one_line_exit_8(cli: CLI, pods: FakeRunpod) -> None:
    pods.no_capacity.add(GPU)
    done = cli("runpod", "create", "--gpu", GPU)
    assert done.returncode == 8
    lines = done.stderr.strip().splitlines()
    assert lines[-2].startswith("Error: RunPod has no capacity") and lines[-1].startswith("hint:")


def test_rate_limit_is_retried_by_the_cli(cli: CLI, pods: FakeRunpod) -> None:
    pods.inject("GET /v2/pods", 429, headers={"Retry-After": "0"}, times=2)
    assert _ok(cli("runpod", "list", "--json")) == []
    assert len(pods.seen("GET /v2/pods")) == 3


def test_offers_show_prices(cli: CLI, pods: FakeRunpod) -> None:
    offers = {o["gpu"]: o for o in _ok(cli("runpod", "offers", "--spot", "--json"))}
    assert offers[GPU]["secure_usd"] == 0.44 and offers[GPU]["spot_min_bid_usd"] == 0.2
    text = cli("runpod", "offers")
    assert text.returncode == 0 and "RTX 4090" in text.stdout and "0.44" in text.stdout


def test_list_hides_foreign_pods_unless_all(cli: CLI, pods: FakeRunpod) -> None:
    pods._new_pod("someone-else", "img", GPU, 1, 0.44, {}, ["22/tcp"])
    assert _ok(cli("runpod", "list", "--json")) == []
    assert [p["name"] for p in _ok(cli("runpod", "list", "--all", "--json"))] == ["someone-else"]


def test_api_key_env_wins_is_never_printed_and_stored_0600(
    cli: CLI, runpod_fake: FakeRunpod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(runpod_fake, tmp_path)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    missing = cli("runpod", "list")
    assert missing.returncode == 4 and "RUNPOD_API_KEY" in missing.stderr
    secret = runpod_fake.api_key
    done = cli("config", "set", "--global", "runpod.api_key", secret)
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    assert done.returncode == 0 and secret not in done.stdout + done.stderr
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    shown = cli("config", "show", "--json")
    assert secret not in shown.stdout and _ok(shown)["values"]["runpod.api_key"] == "***"
    assert _ok(cli("runpod", "list", "--json")) == []  # the key from the config file works
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_wrong_from_env")
    wrong = cli("runpod", "list")  # the environment wins over the file
    assert wrong.returncode == 4 and "rp_wrong_from_env" not in wrong.stderr + wrong.stdout
    assert secret not in wrong.stderr and os.environ["RUNPOD_API_KEY"] == "rp_wrong_from_env"


def test_unknown_pod_is_not_found(cli: CLI, pods: FakeRunpod, project: Path) -> None:
    assert cli("runpod", "status", "--pod-id", "nosuchpod").returncode == 5
    done = cli("run", "--on", "runpod:nosuchpod", "hello.py", cwd=project)
    assert done.returncode == 5 and "not found" in done.stderr
