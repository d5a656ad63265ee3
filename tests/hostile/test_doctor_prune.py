"""`runctl doctor` finds and repairs; `runctl jobs prune` cleans up finished jobs only."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from tests.conftest import CLI, job_id_of, wait_for_log

LONG = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def _finished(cli: CLI, project: Path, *args: str) -> str:
    job = job_id_of(cli("run", *args, "hello.py", cwd=project))
    assert cli("wait", job).returncode == 0
    return job


def _job_dir(cli: CLI, job: str) -> Path:
    return Path(json.loads(cli("status", job, "--json").stdout)["job_dir"])


def test_doctor_rebuilds_the_index_after_the_db_is_lost(
    cli: CLI, project: Path, runctl_home: Path
) -> None:
    job = _finished(cli, project)
    (runctl_home / "state.db").write_bytes(b"\0garbage" * 512)
    for side in ("state.db-wal", "state.db-shm"):
        (runctl_home / side).unlink(missing_ok=True)
    checked = cli("doctor")
    assert checked.returncode == 1 and "corrupt" in checked.stdout
    assert "runctl doctor --fix" in checked.stderr
    fixed = cli("doctor", "--fix", "--json")
    assert fixed.returncode == 0, fixed.stderr
    checks = {c["name"]: c for c in json.loads(fixed.stdout)["checks"]}
    assert checks["state-db"]["fixed"] and "1 job(s)" in checks["rebuild:jobs"]["detail"]
    [row] = json.loads(cli("jobs", "--json").stdout)
    assert row["job_id"] == job and row["state"] == "succeeded" and row["exit_code"] == 0
    assert "line" in cli("logs", job).stdout or cli("logs", job).returncode == 0


def test_doctor_checks_hosts_and_readopts_their_job_dirs(
    cli: CLI, ssh_config: Path, sshd: object, project: Path, runctl_home: Path
) -> None:
    remote = f".runctl-doc-{os.urandom(3).hex()}"
    assert cli("hosts", "add", "doc", "testhost", "--remote-dir", remote).returncode == 0
    job = _finished(cli, project, "--on", "ssh:doc")
    (runctl_home / "state.db").write_bytes(b"garbage")
    assert cli("jobs").returncode == 10  # moved aside; a fresh index from here on
    assert cli("hosts", "add", "doc", "testhost", "--remote-dir", remote).returncode == 0
    done = cli("doctor", "--fix", "--json")
    assert done.returncode == 0, done.stderr
    host = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "host:doc")
    assert host["status"] in ("ok", "warn") and "python 3." in host["detail"]
    assert "GiB free" in host["detail"] and "re-indexed" in host["detail"]
    [row] = json.loads(cli("jobs", "--json").stdout)
    assert row["job_id"] == job and row["state"] == "succeeded"


def test_doctor_reports_an_unreachable_host(cli: CLI, runctl_home: Path) -> None:
    assert cli("hosts", "add", "gone", "127.0.0.1:1", "--no-check").returncode == 0
    started = time.monotonic()
    done = cli("doctor")
    assert time.monotonic() - started < 30
    assert done.returncode == 1 and "host:gone: unreachable" in done.stdout.replace("FAIL  ", "")


def test_doctor_fix_makes_runctl_home_private(cli: CLI, runctl_home: Path) -> None:
    assert cli("jobs").returncode == 0
    runctl_home.chmod(0o755)
    assert "open to other users" in cli("doctor").stdout
    assert cli("doctor", "--fix").returncode == 0
    assert stat.S_IMODE(runctl_home.stat().st_mode) == 0o700


def test_prune_removes_finished_jobs_only(cli: CLI, project: Path) -> None:
    old = [_finished(cli, project) for _ in range(3)]
    (project / "long.py").write_text(LONG)
    running = job_id_of(cli("run", "long.py", cwd=project))
    wait_for_log(cli, running, "ready")
    dirs = {job: _job_dir(cli, job) for job in [*old, running]}
    ckpt = Path(json.loads(cli("status", old[0], "--json").stdout)["checkpoint_dir"])
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "step1.pt").write_bytes(b"x")

    dry = json.loads(cli("jobs", "prune", "--older-than", "0s", "--dry-run", "--json").stdout)
    assert sorted(dry["jobs"]) == sorted(old) and all(d.exists() for d in dirs.values())
    refused = cli("jobs", "prune", "--older-than", "0s")  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr

    done = cli("jobs", "prune", "--older-than", "0s", "--keep", "1", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    removed = json.loads(done.stdout)["removed"]
    assert len(removed) == 2 and old[-1] not in removed  # --keep 1: the newest stays
    assert [dirs[j].exists() for j in removed] == [False, False]
    assert dirs[running].exists() and dirs[old[-1]].exists()
    assert (ckpt / "step1.pt").exists(), "checkpoints stay unless --checkpoints"
    listed = {j["job_id"] for j in json.loads(cli("jobs", "--json").stdout)}
    assert listed == {old[-1], running}
    assert cli("cancel", running).returncode == 0


def test_prune_on_a_host_and_with_checkpoints(
    cli: CLI, ssh_config: Path, sshd: object, project: Path
) -> None:
    remote = f".runctl-prune-{os.urandom(3).hex()}"
    assert cli("hosts", "add", "pr", "testhost", "--remote-dir", remote).returncode == 0
    job = _finished(cli, project, "--on", "ssh:pr")
    done = cli("jobs", "prune", "--older-than", "0s", "--checkpoints", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == [job]
    assert cli("status", job).returncode == 5
    index = cli("doctor", "--fix", "--json")
    host = next(c for c in json.loads(index.stdout)["checks"] if c["name"] == "host:pr")
    assert "re-indexed" not in host["detail"], "the job dir is gone from the host"


def test_retention_days_prunes_lazily_once_a_day(
    cli: CLI, project: Path, runctl_home: Path
) -> None:
    job = _finished(cli, project)
    (project / ".runctl.toml").write_text("[jobs]\nretention_days = 0.00001\n")
    time.sleep(1.2)
    listed = cli("jobs", "--json", cwd=project)
    assert json.loads(listed.stdout) == [] and "jobs.retention_days" in listed.stderr
    assert not _job_dir_exists(runctl_home, job)
    second = _finished(cli, project)
    time.sleep(1.2)
    # Within the day: no second pass, the new finished job stays listed.
    assert [j["job_id"] for j in json.loads(cli("jobs", "--json", cwd=project).stdout)] == [second]


def _job_dir_exists(home: Path, job: str) -> bool:
    return any(home.glob(f"**/jobs/{job}"))
