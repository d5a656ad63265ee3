"""Job options stick and numbers are checked: a job's --grace is what a later `cancel` uses;
every numeric option refuses NaN, infinities and out-of-range values with a one-line error;
`wait --timeout 0` looks once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log

STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def test_cancel_uses_the_grace_the_job_was_started_with(cli: CLI, project: Path) -> None:
    (project / "stubborn.py").write_text(STUBBORN)
    job = job_id_of(cli("run", "--grace", "1", "stubborn.py", cwd=project))
    wait_for_log(cli, job, "ready")
    started = time.monotonic()
    done = cli("cancel", job, "--json")  # no --grace: the job's own 1 s, not jobs.grace_s (10)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert took < 6.0, took


def test_wait_timeout_zero_looks_once(cli: CLI, project: Path) -> None:
    (project / "stubborn.py").write_text(STUBBORN)
    job = job_id_of(cli("run", "stubborn.py", cwd=project))
    started = time.monotonic()
    done = cli("wait", job, "--timeout", "0")
    assert time.monotonic() - started < 5.0
    assert done.returncode == 124, done.stderr
    assert cli("cancel", job, "--grace", "0").returncode == 0


BAD_NUMBERS = ["nan", "inf", "-inf", "1e400", "-1", "abc"]
# (words before, the option, words after): every command that takes a number of seconds,
# money or a percentage
OPTIONS = [
    (("run",), "--grace", ("hello.py",)),
    (("run",), "--checkpoint-sync-s", ("hello.py",)),
    (("run",), "--budget", ("hello.py",)),
    (("run",), "--idle-gpu-util", ("hello.py",)),
    (("cancel",), "--grace", ("some-job",)),
    (("wait",), "--timeout", ("some-job",)),
    (("top",), "--interval", ()),
    (("resources", "enforce"), "--every", ()),
    (("aws", "train"), "--timeout", ("i-0123456789", "hello.py")),
    (("aws", "stop"), "--grace", ("i-0123456789",)),
    (("monitor",), "--interval", ()),
    (("hosts", "add"), "--hourly-usd", ("h1",)),
]


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_numeric_options_refuse_nan_infinity_and_out_of_range(
    cli: CLI, project: Path, value: str
) -> None:
    for before, option, after in OPTIONS:
        args = [*before, f"{option}={value}", *after]
        done = cli(*args, cwd=project)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) <= 2 and lines[0].startswith("Error:"), (args, done.stderr)
        assert option in lines[0] and value in lines[0], (args, lines[0])
