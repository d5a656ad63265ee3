"""Waits on a terminal say what they wait for and for how long; nothing extra otherwise.

The real CLI runs with its stderr on a pseudo-terminal (as in a user's shell) or on a pipe (a
script, CI); stdout is always a pipe so it can be parsed.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import CLI, job_id_of


def _on_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run runctl with stderr on a pty; (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    argv = [sys.executable, "-m", "runctl", *args]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    return proc.wait(timeout=60), out, shown.decode(errors="replace")


def test_a_download_on_a_terminal_shows_what_and_elapsed_time(
    cli: CLI, project: Path, tmp_path: Path
) -> None:
    job = job_id_of(cli("run", "--wait", "hello.py", cwd=project))
    code, out, shown = _on_terminal("get", job, "log", str(tmp_path / "a.log"), cwd=project)
    assert code == 0, shown
    assert f"downloading log from {job}" in shown and "0:00:0" in shown  # elapsed h:mm:ss
    assert out.strip() == str(tmp_path / "a.log")
    # The submit itself says what it waits for while it syncs and launches.
    code, _, shown = _on_terminal("run", "hello.py", cwd=project)
    assert code == 0 and "starting hello.py on local" in shown, shown


def test_no_status_when_not_on_a_terminal_or_under_json(
    cli: CLI, project: Path, tmp_path: Path
) -> None:
    job = job_id_of(cli("run", "--wait", "hello.py", cwd=project))
    piped = cli("get", job, "log", str(tmp_path / "b.log"), cwd=project)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    code, out, shown = _on_terminal("--json", "get", job, "log", str(tmp_path / "c.log"),
                                    cwd=project)  # fmt: skip
    assert code == 0 and "downloading" not in shown and "\x1b" not in shown, shown
    assert json.loads(out)["dest"] == str(tmp_path / "c.log")
