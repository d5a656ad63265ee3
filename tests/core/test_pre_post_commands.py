"""SubmitRequest.pre_commands / post_commands: steps the agent runs around the job.

(Used by `aws train --data-s3/--output-s3`.) Real agent, local provider, in-process submit.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runctl import config
from runctl.core import jobs as core
from runctl.core.targets import resolve_target
from runctl.models import Job
from runctl.runtime import Runtime


def _run(project: Path, pre: list[list[str]], post: list[list[str]]) -> tuple[Job, str]:
    runtime = Runtime(config=config.load(), home=config.home())
    request = core.SubmitRequest(argv=["hello.py", "--lines", "1"], pre_commands=pre,
                                 post_commands=post)  # fmt: skip
    job = core.submit(runtime, resolve_target(runtime, "local"), request, lambda _m: None).job
    job, _ = core.wait(runtime, job, lambda _m: None, timeout_s=60)
    out = io.BytesIO()
    proc_job, _ = core.follow(runtime, job, out, lambda _m: None, follow=False)
    return proc_job, out.getvalue().decode()


@pytest.fixture(autouse=True)
def _in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)


# core.follow leaves its tail process's pipes to the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_steps_run_in_order_with_the_job_environment(project: Path) -> None:
    pre = [["sh", "-c", 'mkdir -p "$RUNCTL_DATA_DIR" && echo pre "$1" > "$RUNCTL_DATA_DIR/x"',
            "sh", "a b"]]  # fmt: skip
    post = [["sh", "-c", 'cat "$RUNCTL_DATA_DIR/x"; echo post "$RUNCTL_OUTPUT_DIR" | wc -w']]
    job, log = _run(project, pre, post)
    assert job.state == "succeeded" and job.exit_code == 0
    assert log.index("[runctl] pre: sh -c") < log.index("line 1") < log.index("pre a b")
    assert log.rstrip().endswith("2")  # "post <dir>" is two words


def test_failing_pre_step_skips_the_job(project: Path) -> None:
    job, log = _run(project, [["sh", "-c", "exit 3"]], [["sh", "-c", "echo never"]])
    assert job.state == "failed" and job.exit_code == 3
    assert "pre step failed with exit code 3" in log
    assert "line 1" not in log and "never" not in log


def test_failing_post_step_fails_a_successful_job(project: Path) -> None:
    job, log = _run(project, [], [["sh", "-c", "exit 5"]])
    assert job.state == "failed" and job.exit_code == 5
    assert "line 1" in log and "post step failed" in log
