"""Jobs on a real sshd over loopback: submit, follow, wait, cancel, sync, get."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log

pytestmark = pytest.mark.integration

NASTY = ["a b", '; rm -rf / $(x) "quotes"', "`id`", "$HOME", "it's", "*", "\\n"]


@pytest.fixture
def host(cli: CLI, ssh_config: Path, sshd: object) -> str:
    # A fresh remote dir per test keeps jobs and synced trees apart.
    remote = f".runctl-test-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "testhost", "--remote-dir", remote, "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["python"].startswith("3.")
    return "testhost"


def _remote(sshd: object, *argv: str) -> str:
    out = subprocess.run(
        [*sshd.ssh_argv(), "--", *argv],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return out.stdout


def test_submit_follow_args_arrive_literally(cli: CLI, host: str, project: Path) -> None:
    done = cli("run", "--on", f"ssh:{host}", "--follow", "hello.py", "--", *NASTY,
               "--lines", "3", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[: len(NASTY)] == [f"arg: {a!r}" for a in NASTY]
    assert lines[-3:] == ["line 1", "line 2", "line 3"]
    assert "synced" in done.stderr


def test_wait_propagates_failure(cli: CLI, host: str, project: Path) -> None:
    job = job_id_of(cli("run", "--on", host, "hello.py", "--", "--exit-code", "5", cwd=project))
    waited = cli("wait", job)
    assert waited.returncode == 5
    assert json.loads(cli("status", job, "--json").stdout)["state"] == "failed"


def test_cancel_remotejob_id_of(cli: CLI, host: str, project: Path) -> None:
    (project / "sleepy.py").write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(143)))\n"
        "print('ready', flush=True)\ntime.sleep(120)\n"
    )
    job = job_id_of(cli("run", "--on", host, "sleepy.py", cwd=project))
    wait_for_log(cli, job, "ready")
    listed = cli("jobs", "--json")  # refreshes running jobs from the host in worker threads
    assert listed.returncode == 0, listed.stderr
    assert {j["job_id"]: j["state"] for j in json.loads(listed.stdout)}[job] == "running"
    done = cli("cancel", job, "--grace", "5", "--json")
    assert json.loads(done.stdout)["state"] == "cancelled", done.stderr
    assert "bye" in cli("logs", job).stdout
    assert cli("wait", job).returncode == 143


def test_running_job_keeps_its_code_while_the_tree_changes(
    cli: CLI, host: str, project: Path, sshd: object
) -> None:
    (project / "show.py").write_text(
        "import os, sys, time\nprint(open('pkg/util.py').read().strip(), flush=True)\n"
        "while not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n"
        "print(open('pkg/util.py').read().strip(), flush=True)\n"
    )
    # The jobs hold on until released, so the first surely runs while the second syncs.
    gate = Path(tempfile.mkdtemp(prefix="runctl-gate-", dir="/tmp"))
    gate.chmod(0o755)
    release = str(gate / "go")
    try:
        first = job_id_of(cli("run", "--on", host, "show.py", "--", release, cwd=project))
        wait_for_log(cli, first, "VALUE = 1")
        (project / "pkg" / "util.py").write_text("VALUE = 2\n")
        second = job_id_of(cli("run", "--on", host, "show.py", "--", release, cwd=project))
        wait_for_log(cli, second, "VALUE = 2")
        Path(release).write_text("")
        assert cli("wait", first).returncode == 0 and cli("wait", second).returncode == 0
        assert cli("logs", first).stdout.splitlines() == ["VALUE = 1", "VALUE = 1"]
        assert cli("logs", second).stdout.splitlines() == ["VALUE = 2", "VALUE = 2"]
        one = json.loads(cli("status", first, "--json").stdout)["workdir"]
        two = json.loads(cli("status", second, "--json").stdout)["workdir"]
        assert one != two and Path(one).parent == Path(two).parent
        # Once nothing runs in the old version, the next sync removes it.
        (project / "pkg" / "util.py").write_text("VALUE = 3\n")
        done = cli("run", "--on", host, "--wait", "show.py", "--", release, cwd=project)
        assert done.returncode == 0, done.stderr
        assert Path(one).name not in _remote(sshd, "ls", str(Path(one).parent))
    finally:
        shutil.rmtree(gate, ignore_errors=True)


def test_unchanged_tree_skips_sync_and_changes_are_incremental(
    cli: CLI, host: str, project: Path, sshd: object
) -> None:
    first = cli("run", "--on", host, "hello.py", cwd=project)
    assert "synced 3/3 files" in first.stderr, first.stderr
    second = cli("run", "--on", host, "hello.py", cwd=project)
    assert "code unchanged" in second.stderr
    (project / "pkg" / "util.py").write_text("VALUE = 2\n")
    (project / "new.txt").write_text("new\n")
    third = cli("run", "--on", host, "hello.py", cwd=project)
    assert "synced 2/4 files" in third.stderr, third.stderr
    # A file deleted locally disappears from the host's tree too.
    (project / "new.txt").unlink()
    job = job_id_of(cli("run", "--on", host, "hello.py", cwd=project))
    info = json.loads(cli("status", job, "--json").stdout)
    code_dir = info["workdir"]
    listing = _remote(sshd, "ls", code_dir, f"{code_dir}/pkg")
    assert "new.txt" not in listing and "util.py" in listing
    assert _remote(sshd, "cat", f"{code_dir}/pkg/util.py") == "VALUE = 2\n"


def test_stale_host_copy_is_detected_and_resynced(
    cli: CLI, host: str, project: Path, sshd: object
) -> None:
    job = job_id_of(cli("run", "--on", host, "hello.py", cwd=project))
    workdir = json.loads(cli("status", job, "--json").stdout)["workdir"]
    _remote(sshd, "rm", "-rf", str(Path(workdir).parent))  # someone wiped the host's copy
    again = cli("run", "--on", host, "--wait", "hello.py", "--", "x", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "synced 3/3 files" in again.stderr


def test_gitignore_runctlignore_and_include(cli: CLI, host: str, project: Path,
                                            sshd: object) -> None:  # fmt: skip
    (project / ".gitignore").write_text("data/\n*.log\n")
    (project / ".runctlignore").write_text("secret.txt\n")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text("1,2\n")
    (project / "run.log").write_text("x\n")
    (project / "secret.txt").write_text("s\n")
    job = job_id_of(cli("run", "--on", host, "hello.py", cwd=project))
    workdir = json.loads(cli("status", job, "--json").stdout)["workdir"]
    cli("wait", job)
    files = _remote(sshd, "find", workdir, "-type", "f").split()
    names = {Path(f).relative_to(workdir).as_posix() for f in files}
    assert "hello.py" in names and "pkg/util.py" in names
    assert not names & {"data/train.csv", "run.log", "secret.txt"}
    job = job_id_of(cli("run", "--on", host, "--include", "data/", "hello.py", cwd=project))
    workdir = json.loads(cli("status", job, "--json").stdout)["workdir"]
    assert _remote(sshd, "cat", f"{workdir}/data/train.csv") == "1,2\n"


def test_tar_fallback_without_rsync(cli: CLI, host: str, project: Path, ssh_config: Path) -> None:
    ssh_config.write_text(ssh_config.read_text() + 'sync_method = "tar"\n')
    done = cli("run", "--on", host, "--follow", "hello.py", "--", "via tar", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "arg: 'via tar'" in done.stdout


def test_get_refuses_traversal_and_fetches_outputs(
    cli: CLI, host: str, project: Path, tmp_path: Path, sshd: object
) -> None:
    (project / "write.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['RUNCTL_OUTPUT_DIR'], 'm.json').write_text('{\"ok\": 1}')\n"
    )
    job = job_id_of(cli("run", "--on", host, "--wait", "write.py", cwd=project))
    for bad in ("../../../../etc/passwd", "/etc/passwd", "outputs/../../../x"):
        done = cli("get", job, bad, str(tmp_path / "stolen"))
        assert done.returncode == 2 and "refusing" in done.stderr, bad
    job_dir = json.loads(cli("status", job, "--json").stdout)["job_dir"]
    _remote(sshd, "ln", "-s", "/etc", f"{job_dir}/outputs/etc")
    done = cli("get", job, "outputs/etc/hostname", str(tmp_path / "stolen"))
    assert done.returncode == 2 and "outside" in done.stderr
    assert not (tmp_path / "stolen").exists()
    got = cli("get", job, "outputs/m.json", str(tmp_path / "m.json"))
    assert got.returncode == 0, got.stderr
    assert json.loads((tmp_path / "m.json").read_text()) == {"ok": 1}
    again = cli("get", job, "outputs/m.json", str(tmp_path / "m.json"))
    assert again.returncode == 9  # never overwrite without --force


def test_requirements_installed_with_visible_progress(cli: CLI, host: str, project: Path) -> None:
    # A local path requirement keeps the test offline and fast.
    pkg = project / "localdep"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(
        "[build-system]\nrequires=['setuptools']\nbuild-backend='setuptools.build_meta'\n"
        "[project]\nname='localdep'\nversion='0.1'\n"
    )
    (pkg / "localdep.py").write_text("MESSAGE = 'dep ok'\n")
    (project / "requirements.txt").write_text("./localdep\n")
    (project / "usedep.py").write_text("import localdep\nprint(localdep.MESSAGE)\n")
    done = cli("run", "--on", host, "--follow", "usedep.py", cwd=project, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[runctl] installing requirements.txt" in done.stdout
    assert "dep ok" in done.stdout
    again = cli("run", "--on", host, "--follow", "usedep.py", cwd=project)
    assert "requirements.txt unchanged" in again.stdout


def test_exec_runs_command_in_synced_project(cli: CLI, host: str, project: Path) -> None:
    done = cli("exec", "--on", host, "--", "cat", "pkg/util.py", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "VALUE = 1\n"
    failing = cli("exec", "--on", host, "--", "sh", "-c", "exit 4", cwd=project)
    assert failing.returncode == 4


def test_unreachable_host_is_a_clean_error(cli: CLI, ssh_config: Path, project: Path) -> None:
    done = cli("run", "--on", "ssh:nobody@127.0.0.1:1", "hello.py", cwd=project)
    assert done.returncode == 7
    assert "cannot reach" in done.stderr and "Traceback" not in done.stderr
