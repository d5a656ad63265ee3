"""The CLI's contract: fast help, pure JSON, one-line errors with hints, stable exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CLI


def test_import_cli_leaves_heavy_sdks_unloaded() -> None:
    code = (
        "import sys, runctl.cli, runctl.cli.jobs, runctl.core.jobs;"
        "bad = [m for m in ('boto3', 'botocore', 'httpx', 'textual', 'rich') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command(cli: CLI) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for name in ("run", "local", "exec", "jobs", "status", "logs", "wait", "cancel", "hosts",
                 "monitor", "init", "config", "get"):  # fmt: skip
        assert f"  {name} " in done.stdout


def test_every_subcommand_help_works(cli: CLI) -> None:
    for args in (["run"], ["hosts", "add"], ["config", "set"], ["logs"], ["monitor"]):
        done = cli(*args, "--help")
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout


def test_unknown_job_is_one_line_error_with_hint_and_exit_5(cli: CLI) -> None:
    done = cli("status", "nope-123456")
    assert done.returncode == 5
    lines = done.stderr.strip().splitlines()
    assert lines == ["Error: no job 'nope-123456'", "hint: see `runctl jobs`"]
    assert "Traceback" not in done.stderr


def test_json_error_goes_to_stdout_as_json(cli: CLI) -> None:
    done = cli("--json", "status", "nope-123456")
    assert done.returncode == 5
    assert json.loads(done.stdout)["error"]["exit_code"] == 5


def test_invalid_job_id_is_usage_error(cli: CLI) -> None:
    done = cli("logs", "../../etc/passwd")
    assert done.returncode == 2
    assert "invalid job id" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_error_exit_2(cli: CLI) -> None:
    done = cli("jobs", "--limit", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("Error:")


def test_missing_script_is_not_found(cli: CLI) -> None:
    done = cli("run", "does_not_exist.py")
    assert done.returncode == 5
    assert "script not found" in done.stderr


def test_unknown_target(cli: CLI, project: object) -> None:
    done = cli("run", "--on", "mars", "examples/hello.py")
    assert done.returncode == 2
    assert "unknown target 'mars'" in done.stderr


def test_jobs_empty_json_is_a_list(cli: CLI) -> None:
    done = cli("jobs", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout) == []


def test_fast_help_matches_click_help() -> None:
    fast = subprocess.run([sys.executable, "-m", "runctl", "--help"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    code = "from runctl.cli import main; main(['--help'])"
    slow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert fast.stdout == slow.stdout
    bare = subprocess.run([sys.executable, "-m", "runctl"], capture_output=True, text=True)
    assert bare.stdout == fast.stdout and bare.returncode == 0


def test_fast_help_imports_no_click() -> None:
    code = (
        "import sys; sys.argv = ['runctl', '--help']\n"
        "import runctl.entry\n"
        "try:\n    runctl.entry.main()\nexcept SystemExit:\n    pass\n"
        "print('click' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr.strip() == "False"


def test_failed_job_under_json_prints_one_document(cli: CLI, project: object) -> None:
    done = cli("local", "--json", "hello.py", "--", "--exit-code", "3", cwd=project)  # type: ignore[arg-type]
    assert done.returncode == 3
    data = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert data["state"] == "failed" and data["exit_code"] == 3
    assert "Error: job" in done.stderr
