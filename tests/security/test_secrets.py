"""A user's secrets reach the job and nothing else.

``--secret NAME``, ``--env-file PATH`` and secret-looking ``--env`` values arrive in the job's
environment (it prints their sha256), on every kind of target: local, an SSH host, an AWS
instance (moto + the loopback sshd) and a RunPod pod (fake API + the loopback sshd). Meanwhile
`ps` is sampled, and afterwards RUNCTL_HOME, the host's runctl dir and every ``--json``
output are searched: the values are nowhere. On the host they live in a 0600 file in the
job's 0700 directory while it runs, and the file is gone when it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.fakes.fixtures import on_sshd, runpod_fake  # noqa: F401 - fixture
from tests.providers.aws.conftest import (  # noqa: F401 - fixtures
    MotoAWS,
    aws_ssh,
    created_id,
    moto_aws,
    moto_endpoint,
)

pytestmark = pytest.mark.integration

# Prints the sha256 of each named variable, then holds until the test drops a "go" file in
# the job's outputs dir (so the test can look at the host while the job runs).
JOB = """\
import hashlib, os, sys, time
for name in sys.argv[1:]:
    value = os.environ.get(name)
    digest = hashlib.sha256(value.encode()).hexdigest() if value is not None else "MISSING"
    print(f"{name}={digest}", flush=True)
go = os.path.join(os.environ["RUNCTL_OUTPUT_DIR"], "go")
deadline = time.time() + 60
while os.environ.get("HOLD") and not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
"""
NAMES = ("HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD", "PLAIN")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def values(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh secret values; HF_TOKEN is in runctl's environment (for --secret)."""
    found = {name: f"{name.lower()}-{secrets.token_hex(12)}" for name in NAMES}
    found["PLAIN"] = "not secret"
    monkeypatch.setenv("HF_TOKEN", found["HF_TOKEN"])
    return found


@pytest.fixture
def job_project(project: Path) -> Path:
    (project / "show_env.py").write_text(JOB)
    return project


class PsSampler:
    """``ps -eo args`` every 20 ms on a thread, until stopped."""

    def __init__(self) -> None:
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            self.samples.append(done.stdout)
            self._stop.wait(0.02)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _files_containing(root: Path, needle: str) -> list[str]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                if needle.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _run_target(
    cli: CLI,
    submit: list[str],
    project: Path,
    tmp_path: Path,
    values: dict[str, str],
    host_dir: Path,
    runctl_home: Path,
) -> None:
    """Submit ``show_env.py`` with three kinds of secrets via ``submit`` (the command up to
    its options); check the job saw them and nothing else did."""
    env_file = tmp_path / "job.env"
    env_file.write_text(f'# for the job\nexport DB_PASSWORD="{values["DB_PASSWORD"]}"\n')
    outputs: list[str] = []
    with PsSampler() as ps:
        done = cli(*submit, "--secret", "HF_TOKEN", "--env-file", str(env_file),
                   "--env", f"WANDB_API_KEY={values['WANDB_API_KEY']}",
                   "--env", "PLAIN=not secret", "--env", "HOLD=1", "--json",
                   "show_env.py", "--", *NAMES, cwd=project)  # fmt: skip
        outputs.append(done.stdout)
        job = _json(done)
        job_id, job_dir = job["job_id"], Path(job["job_dir"])
        deadline = time.monotonic() + 60
        while "PLAIN=" not in (job_dir / "log").read_text():
            assert time.monotonic() < deadline, "the job never printed"
            time.sleep(0.05)
        # While it runs: the values sit in a 0600 file in the job's 0700 dir, nowhere else.
        secret_file = job_dir / "secrets.json"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert job_dir.stat().st_mode & 0o777 == 0o700
        assert (job_dir / "job.json").stat().st_mode & 0o777 == 0o600
        assert json.loads(secret_file.read_text()) == {
            k: values[k] for k in ("HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD")
        }
        # `get` of the running job's whole dir leaves the secrets file on the host, and
        # asking for it by name is refused.
        got = tmp_path / "got"
        fetched = cli("get", job_id, ".", str(got), "--json")
        assert fetched.returncode == 0, fetched.stderr
        assert (got / "job.json").exists() and not (got / "secrets.json").exists()
        refused = cli("get", job_id, "secrets.json", str(tmp_path / "s.json"))
        assert refused.returncode == 2 and "secrets" in refused.stderr, refused.stderr
        assert not (tmp_path / "s.json").exists()
        outputs.append(fetched.stdout)
        (job_dir / "outputs" / "go").touch()
        waited = cli("wait", job_id, "--json")
    outputs += [waited.stdout]
    assert _json(waited)["state"] == "succeeded", waited.stderr
    logs = cli("logs", job_id, "--json")
    outputs += [logs.stdout, cli("status", job_id, "--json").stdout,
                cli("jobs", "--json").stdout, cli("status", "--json").stdout]  # fmt: skip
    log = _json(logs)["log"]
    for name in NAMES:
        assert f"{name}={_digest(values[name])}" in log
    assert not secret_file.exists(), "the secrets file outlived the job"

    spec = json.loads((job_dir / "job.json").read_text())
    assert spec["env"]["HF_TOKEN"] == spec["env"]["WANDB_API_KEY"] == "***"
    assert spec["env"]["PLAIN"] == "not secret"
    assert spec["secrets"] == ["DB_PASSWORD", "HF_TOKEN", "WANDB_API_KEY"]
    for name in ("HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD"):
        value = values[name]
        assert _files_containing(runctl_home, value) == []
        assert _files_containing(host_dir, value) == []
        assert not [out for out in outputs if value in out]
    # --env puts its value on runctl's own command line; --secret and --env-file do not.
    for name in ("HF_TOKEN", "DB_PASSWORD"):
        assert ps.samples and not [s for s in ps.samples if values[name] in s]


def _home_of(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


# ----------------------------------------------------------------------------- targets


def test_secrets_reach_a_local_job_and_nothing_else(
    cli: CLI, job_project: Path, tmp_path: Path, values: dict[str, str], runctl_home: Path
) -> None:
    _run_target(cli, ["run"], job_project, tmp_path, values, runctl_home / "local", runctl_home)


@pytest.fixture
def ssh_host(cli: CLI, ssh_config: Path, sshd: Any) -> tuple[str, Path]:
    remote = f".runctl-secrets-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "testhost", "--remote-dir", remote, "--json")
    assert done.returncode == 0, done.stderr
    return "testhost", _home_of(sshd.user) / remote


def test_secrets_reach_an_ssh_job_and_nothing_else(
    cli: CLI,
    job_project: Path,
    tmp_path: Path,
    values: dict[str, str],
    runctl_home: Path,
    ssh_host: tuple[str, Path],
) -> None:
    name, host_dir = ssh_host
    _run_target(cli, ["run", "--on", f"ssh:{name}"], job_project, tmp_path, values, host_dir,
                runctl_home)  # fmt: skip
    assert host_dir.stat().st_mode & 0o777 == 0o700


def test_secrets_reach_an_aws_job_and_nothing_else(
    cli: CLI,
    job_project: Path,
    tmp_path: Path,
    values: dict[str, str],
    runctl_home: Path,
    aws_ssh: MotoAWS,  # noqa: F811 - fixture
    sshd: Any,
) -> None:
    instance = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(instance, sshd)
    remote = tomllib.loads(aws_ssh.config_file.read_text())["aws"]["remote_dir"]
    _run_target(cli, ["aws", "train", instance], job_project, tmp_path, values,
                _home_of(sshd.user) / remote, runctl_home)  # fmt: skip


def test_secrets_reach_a_runpod_job_and_nothing_else(
    cli: CLI,
    job_project: Path,
    tmp_path: Path,
    values: dict[str, str],
    runctl_home: Path,
    runpod_fake: Any,  # noqa: F811 - fixture
    sshd: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = on_sshd(runpod_fake, sshd, tmp_path, monkeypatch, "rp-secrets")
    created = _json(cli("runpod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--json"))
    _run_target(cli, ["runpod", "train", "--pod-id", created["id"]], job_project, tmp_path,
                values, _home_of(sshd.user) / remote, runctl_home)  # fmt: skip


# ------------------------------------------------------------------------ refusals, config


def test_a_missing_secret_is_exit_2_naming_it_and_starts_nothing(
    cli: CLI, job_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    done = cli("run", "--secret", "NOT_SET_TOKEN", "show_env.py", cwd=job_project)
    assert done.returncode == 2
    assert "NOT_SET_TOKEN" in done.stderr and "hint: export NOT_SET_TOKEN=" in done.stderr
    assert "Traceback" not in done.stderr
    assert _json(cli("jobs", "--json", "--no-refresh")) == []


def test_secrets_listed_in_the_config_reach_every_job(
    cli: CLI,
    job_project: Path,
    values: dict[str, str],
    runctl_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "xdg-config" / "runctl" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[jobs]\nsecrets = ["HF_TOKEN"]\n')
    done = cli("run", "--follow", "show_env.py", "--", "HF_TOKEN", cwd=job_project)
    assert done.returncode == 0, done.stderr
    assert f"HF_TOKEN={_digest(values['HF_TOKEN'])}" in done.stdout
    assert _files_containing(runctl_home, values["HF_TOKEN"]) == []
    monkeypatch.delenv("HF_TOKEN")
    refused = cli("run", "show_env.py", cwd=job_project)
    assert refused.returncode == 2 and "jobs.secrets" in refused.stderr


def test_a_restart_reads_secrets_again_or_names_the_missing_one(
    cli: CLI,
    job_project: Path,
    values: dict[str, str],
    runctl_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _json(cli("run", "--wait", "--json", "--secret", "HF_TOKEN", "show_env.py", "--",
                      "HF_TOKEN", cwd=job_project))  # fmt: skip
    monkeypatch.delenv("HF_TOKEN")
    refused = cli("checkpoint", "resume", first["job_id"])
    assert refused.returncode == 2, refused.stderr
    assert "HF_TOKEN" in refused.stderr and "not set" in refused.stderr
    monkeypatch.setenv("HF_TOKEN", "rotated-" + secrets.token_hex(8))
    again = _json(cli("checkpoint", "resume", first["job_id"], "--json"))
    waited = _json(cli("wait", again["job_id"], "--json"))
    assert waited["state"] == "succeeded"
    log = _json(cli("logs", again["job_id"], "--json"))["log"]
    assert f"HF_TOKEN={_digest(os.environ['HF_TOKEN'])}" in log
    assert _files_containing(runctl_home, os.environ["HF_TOKEN"]) == []


def test_secrets_of_a_job_whose_agent_was_killed_are_removed_by_the_next_look(
    cli: CLI, job_project: Path, values: dict[str, str], runctl_home: Path
) -> None:
    job = _json(cli("run", "--json", "--secret", "HF_TOKEN", "--env", "HOLD=1",
                    "show_env.py", cwd=job_project))  # fmt: skip
    job_dir = Path(job["job_dir"])
    assert (job_dir / "secrets.json").exists()
    state = json.loads((job_dir / "state.json").read_text())
    deadline = time.monotonic() + 30
    while not state.get("agent_pid"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        state = json.loads((job_dir / "state.json").read_text())
    job_pid = int((job_dir / "pid").read_text()) if (job_dir / "pid").exists() else None
    os.kill(state["agent_pid"], signal.SIGKILL)
    if job_pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (job_dir / "secrets.json").exists():
        assert time.monotonic() < deadline, "the secrets file outlived the agent"
        cli("status", job["job_id"], "--json")
        time.sleep(0.2)


def test_json_never_shows_secret_values_in_recorded_specs(
    cli: CLI, job_project: Path, values: dict[str, str], runctl_home: Path
) -> None:
    from runctl.state.store import Store

    job = _json(cli("run", "--wait", "--json", "--env",
                    f"WANDB_API_KEY={values['WANDB_API_KEY']}", "show_env.py",
                    cwd=job_project))  # fmt: skip
    store = Store.open(runctl_home / "state.db")
    try:
        spec = store.get_job(job["job_id"]).spec
    finally:
        store.db.close()
    assert spec["env"] == {"WANDB_API_KEY": "***"}
    assert spec["secrets"] == ["WANDB_API_KEY"]


def test_recovery_gives_up_before_replacing_a_machine_when_a_secret_is_missing(
    runctl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runctl import config
    from runctl.core.recover import Controller
    from runctl.models import Job, JobState
    from runctl.runtime import Runtime

    spec = {"secrets": ["HF_TOKEN"], "env": {"HF_TOKEN": "***"},
            "recover": {"max_restarts": 3, "policy": "same"}}  # fmt: skip
    job = Job("train-abc123", "train", "proj", "aws", "i-0123", JobState.PREEMPTED,
              ("train.py",), "/j", "/w", "/c", "2026-01-01T00:00:00Z", spec=spec)  # fmt: skip
    rt = Runtime(config=config.load(), home=runctl_home)
    controller = Controller(rt, job, progress=lambda _m: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    why = controller._why_stop(job, "preempted", 0, 3)
    assert why is not None and "HF_TOKEN" in why
    monkeypatch.setenv("HF_TOKEN", "x")
    assert controller._why_stop(job, "preempted", 0, 3) is None


@pytest.mark.parametrize(
    "command",
    [
        ("run",),
        ("local",),
        ("exec",),
        ("aws", "train"),
        ("runpod", "train"),
        ("lyceum", "train"),
        ("workflow", "train"),
    ],  # fmt: skip
)
def test_every_command_that_starts_a_job_takes_secrets(cli: CLI, command: tuple[str, ...]) -> None:
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "--secret NAME" in done.stdout and "--env-file PATH" in done.stdout


def test_malformed_env_and_env_file_errors_never_echo_a_value(
    cli: CLI, job_project: Path, tmp_path: Path
) -> None:
    bad_env = cli("run", "--env", "MY-TOKEN=tok-echo-1", "show_env.py", cwd=job_project)
    assert bad_env.returncode == 2 and "MY-TOKEN" in bad_env.stderr
    env_file = tmp_path / "bad.env"
    env_file.write_text('GOOD=1\nnot a line tok-echo-2\nQUOTED="tok-echo-3\n')
    bad_file = cli("run", "--env-file", str(env_file), "show_env.py", cwd=job_project)
    assert bad_file.returncode == 2 and f"{env_file}:2:" in bad_file.stderr
    env_file.write_text('QUOTED="tok-echo-3\n')
    unterminated = cli("run", "--env-file", str(env_file), "show_env.py", cwd=job_project)
    assert unterminated.returncode == 2 and "unterminated" in unterminated.stderr
    for done in (bad_env, bad_file, unterminated):
        assert "tok-echo" not in done.stderr + done.stdout


def test_an_env_file_in_the_usual_dotenv_forms_is_read_as_written(tmp_path: Path) -> None:
    from runctl.core.secret_env import read_env_file

    path = tmp_path / ".env"
    path.write_text(
        "# comment\n\n"
        "export A_TOKEN=plain  # trailing comment\n"
        "B='single $quoted # not a comment'\n"
        'C="double \\"escaped\\"\\nnewline"\n'
        'PEM="-----BEGIN KEY-----\nline2\n-----END KEY-----"\n'
        "EMPTY=\n"
        "SPACED = value with spaces \n"
    )
    assert read_env_file(path) == {
        "A_TOKEN": "plain",
        "B": "single $quoted # not a comment",
        "C": 'double "escaped"\nnewline',
        "PEM": "-----BEGIN KEY-----\nline2\n-----END KEY-----",
        "EMPTY": "",
        "SPACED": "value with spaces",
    }
