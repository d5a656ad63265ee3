"""A user follows a job that goes quiet for a while (issue 21): `logs -f` no longer polls the
job 10 times a second; it sleeps on the job directory (inotify) and still shows the next line
as soon as it is written, and ends when the job does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from runctl.agent.runctl_agent import TAIL_IDLE_S, _DirWaiter
from tests.conftest import CLI, job_id_of


def test_follow_shows_lines_after_a_quiet_spell_and_ends_with_the_job(
    cli: CLI, project: Path
) -> None:
    (project / "quiet.py").write_text(
        "import time\n"
        "print('before the pause', flush=True)\n"
        "time.sleep(3)\n"
        "print('after the pause', flush=True)\n"
        "time.sleep(0.5)\n"
        "print('last line', flush=True)\n"
    )
    job = job_id_of(cli("run", "quiet.py", cwd=project))
    follow = cli.popen("logs", job, "-f")
    assert follow.stdout is not None
    seen: list[tuple[float, str]] = []
    for line in follow.stdout:
        seen.append((time.monotonic(), line.rstrip("\n")))
    ended = time.monotonic()
    assert follow.wait(timeout=30) == 0
    lines = [text for _, text in seen]
    assert lines[-3:] == ["before the pause", "after the pause", "last line"]
    at = dict((text, when) for when, text in seen)
    # Each line arrives when written (not a poll interval late) and the stream closes with
    # the job, though the follower had backed off to its idle pace during the pause.
    assert 0.3 < at["last line"] - at["after the pause"] < 0.5 + TAIL_IDLE_S
    assert ended - at["last line"] < 2 * TAIL_IDLE_S + 1


def test_waiter_wakes_when_a_file_in_the_job_dir_changes(tmp_path: Path) -> None:
    waiter = _DirWaiter([str(tmp_path)])
    assert waiter.fd_ok  # Linux: inotify through ctypes
    log = tmp_path / "log"
    log.write_bytes(b"")
    time.sleep(0.05)
    waiter.wait(TAIL_IDLE_S)  # drain the creation
    writer = threading.Timer(0.2, lambda: log.write_bytes(b"next line\n"))
    start = time.monotonic()
    writer.start()
    waiter.wait(TAIL_IDLE_S)
    woke = time.monotonic() - start
    writer.join()
    waiter.close()
    assert woke < TAIL_IDLE_S * 0.8  # woken by the write, not by the idle timeout


def test_waiter_without_inotify_sleeps_the_given_time(tmp_path: Path) -> None:
    waiter = _DirWaiter([str(tmp_path / "gone")])  # nothing to watch: falls back to sleeping
    assert not waiter.fd_ok
    start = time.monotonic()
    waiter.wait(0.2)
    assert 0.15 < time.monotonic() - start < 2
