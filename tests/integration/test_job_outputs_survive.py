"""What a job writes into its working directory survives later code syncs (real sshd, torch).

Scripts that save ``./checkpoints/step_N.pt`` beside their code write into the code version
they run in. A later sync that removes that version moves those files into the job's dir
(``status`` says where) instead of deleting them, and a sync never deletes a file it did not
put there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, job_id_of, need, wait_for_log

pytestmark = pytest.mark.integration

TORCH_PYTHON = os.environ.get("RUNCTL_TEST_TORCH_PYTHON", "/opt/runctl-test-torch/bin/python")
AGENT = REPO / "src" / "runctl" / "agent" / "runctl_agent.py"

# The seed's convention: checkpoints in ./checkpoints, resume from RUNCTL_RESUME_FROM. Trains
# one step at a time until the release file (argv[1]) exists, saving after every step.
TRAIN = """\
import os, sys, time
from pathlib import Path

import torch

import model

release = sys.argv[1]
torch.manual_seed(0)
net = model.build()
opt = torch.optim.SGD(net.parameters(), lr=0.1)
step = 0
resume = os.environ.get("RUNCTL_RESUME_FROM")
if resume:
    state = torch.load(resume, weights_only=True)
    net.load_state_dict(state["model"])
    step = state["step"]
    print(f"resumed from step {step}", flush=True)
Path("checkpoints").mkdir(exist_ok=True)
x, y = torch.randn(64, 4), torch.randn(64, 1)
while True:
    step += 1
    loss = torch.nn.functional.mse_loss(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    torch.save({"model": net.state_dict(), "step": step}, f"checkpoints/step_{step}.pt")
    print(f"saved checkpoints/step_{step}.pt", flush=True)
    if os.path.exists(release):
        break
    time.sleep(0.3)
print(f"done at step {step}", flush=True)
"""
MODEL = "import torch\n\n\ndef build():\n    return torch.nn.Linear(4, 1)  # {}\n"


def _remote(sshd: object, *argv: str) -> str:
    out = subprocess.run(
        [*sshd.ssh_argv(), "--", *argv],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return str(out.stdout)


def _last_saved(log: str) -> int:
    saved = [line for line in log.splitlines() if line.startswith("saved checkpoints/step_")]
    return int(saved[-1].removeprefix("saved checkpoints/step_").removesuffix(".pt"))


@pytest.fixture
def torch_host(cli: CLI, ssh_config: Path, sshd: object) -> str:
    need(None if Path(TORCH_PYTHON).exists() else f"no torch interpreter at {TORCH_PYTHON}")
    remote = f".runctl-outputs-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "torchbox", "testhost", "--python", TORCH_PYTHON,
               "--remote-dir", remote)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return "torchbox"


@pytest.fixture
def release() -> Iterator[Path]:
    # Readable by the ssh test user (another account): a directory of its own under /tmp.
    gate = Path(tempfile.mkdtemp(prefix="runctl-gate-", dir="/tmp"))
    gate.chmod(0o755)
    yield gate / "go"
    shutil.rmtree(gate, ignore_errors=True)


def test_checkpoints_a_job_wrote_beside_its_code_survive_later_syncs_and_resume(
    cli: CLI, torch_host: str, project: Path, sshd: object, release: Path, tmp_path: Path
) -> None:
    (project / "train.py").write_text(TRAIN)
    (project / "model.py").write_text(MODEL.format(1))
    run = ("run", "--on", torch_host)
    first = job_id_of(cli(*run, "train.py", "--", str(release), cwd=project))
    wait_for_log(cli, first, "saved checkpoints/step_2.pt", timeout=60)

    # Edit the code and train again while the first job still runs: a new code version.
    (project / "model.py").write_text(MODEL.format(2))
    second = job_id_of(cli(*run, "train.py", "--", str(release), cwd=project))
    wait_for_log(cli, second, "saved checkpoints/step_1.pt", timeout=60)
    release.write_text("")
    assert cli("wait", first).returncode == 0 and cli("wait", second).returncode == 0
    log1 = cli("logs", first).stdout
    last = _last_saved(log1)  # written after the second job's version was made
    workdir1 = json.loads(cli("status", first, "--json").stdout)["workdir"]
    workdir2 = json.loads(cli("status", second, "--json").stdout)["workdir"]
    assert workdir1 != workdir2
    # The second job started fresh: it never saw (nor overwrote) the first job's files.
    assert "resumed" not in cli("logs", second).stdout

    # Another edit, and a third run resuming from the first job's last checkpoint, named by
    # the path the first job wrote it to. This sync removes the first job's code version.
    (project / "model.py").write_text(MODEL.format(3))
    third = cli(*run, "--follow", "--resume-from", f"{workdir1}/checkpoints/step_{last}.pt",
                "train.py", "--", str(release), cwd=project, timeout=120)  # fmt: skip
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"resumed from step {last}" in third.stdout
    assert f"saved checkpoints/step_{last + 1}.pt" in third.stdout
    versions = _remote(sshd, "ls", str(Path(workdir1).parent)).split()
    assert Path(workdir1).name not in versions  # the old version is gone...

    # ...but everything the first job wrote is kept with the job, and status says where.
    status = json.loads(cli("status", first, "--json").stdout)
    moved = status["workdir_outputs"]
    assert moved.startswith(status["job_dir"])
    listing = _remote(sshd, "ls", f"{moved}/checkpoints").split()
    assert sorted(listing) == sorted(f"step_{n}.pt" for n in range(1, last + 1))
    assert "workdir files" in cli("status", first).stdout
    for step in (1, last):  # intact: the second job's step_1.pt never overwrote the first's
        dest = tmp_path / f"first-{step}.pt"
        got = cli("get", first, f"workdir/checkpoints/step_{step}.pt", str(dest))
        assert got.returncode == 0, got.stderr
        loaded = subprocess.run(
            [TORCH_PYTHON, "-c", "import sys, torch; "
             "print(torch.load(sys.argv[1], weights_only=True)['step'])", str(dest)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert loaded.stdout.strip() == str(step)


def test_a_sync_never_deletes_files_it_did_not_put_there(tmp_path: Path) -> None:
    # The agent as the CLI drives it: a synced tree, files a job wrote, then a sync whose
    # delete list (from a confused or hostile client) names both kinds.
    base = tmp_path / "base"
    current = base / "code" / "proj" / "current"

    def agent(*args: str, stdin: str = "") -> dict[str, object]:
        done = subprocess.run([sys.executable, str(AGENT), *args], input=stdin,
                              capture_output=True, text=True, check=True)  # fmt: skip
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    prepared = agent("prepare-sync", "--base", str(base), "--code-dir", str(current))
    version = Path(str(prepared["dir"]))
    (version / "train.py").write_text("print(1)\n")
    (version / "old.py").write_text("print(0)\n")
    manifest = {
        "version": 1,
        "digest": "d1",
        "files": {"train.py": [9, "0" * 64, False], "old.py": [9, "0" * 64, False]},
    }
    request = {"manifest": json.dumps(manifest), "digest": "d1", "delete": []}
    agent("apply-manifest", "--code-dir", str(current), stdin=json.dumps(request))
    (version / "checkpoints").mkdir()
    (version / "checkpoints" / "step_1.pt").write_bytes(b"weights")
    (version / "notes.txt").write_text("a job's output\n")

    del manifest["files"]["old.py"]  # type: ignore[attr-defined]
    request = {"manifest": json.dumps(manifest), "digest": "d2",
               "delete": ["old.py", "notes.txt", "checkpoints/step_1.pt"]}  # fmt: skip
    answer = agent("apply-manifest", "--code-dir", str(current), stdin=json.dumps(request))
    assert answer == {"deleted": 1}
    assert not (version / "old.py").exists()
    assert (version / "checkpoints" / "step_1.pt").read_bytes() == b"weights"
    assert (version / "notes.txt").exists() and (version / "train.py").exists()


def test_files_of_a_removed_version_go_to_the_job_that_wrote_them(tmp_path: Path) -> None:
    # Two jobs ran one after the other in one code version; when a later sync removes it,
    # each job gets the files written while it was the newest, and bytecode caches go.
    base = tmp_path / "base"
    current = base / "code" / "proj" / "current"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def agent(*args: str) -> dict[str, object]:
        done = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True,
                              text=True, check=True, env=env)  # fmt: skip
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    version = Path(
        str(agent("prepare-sync", "--base", str(base), "--code-dir", str(current))["dir"])
    )
    meta = version / ".runctl"
    meta.mkdir()
    (meta / "manifest.json").write_text(json.dumps({"files": {"train.py": [1, "0" * 64, False]}}))
    (version / "train.py").write_text("x")
    now = time.time()
    for job_id, started in (("job-a", now - 100), ("job-b", now - 50)):
        job_dir = base / "jobs" / job_id
        job_dir.mkdir(parents=True)
        (job_dir / "job.json").write_text(json.dumps({"workdir": str(version)}))
        (job_dir / "state.json").write_text(json.dumps({"state": "succeeded"}))
        os.utime(job_dir / "job.json", (started, started))
    (version / "out").mkdir()
    for name, written in (("a.txt", now - 80), ("b.txt", now - 10)):
        (version / "out" / name).write_text(name)
        os.utime(version / "out" / name, (written, written))
    (version / "__pycache__").mkdir()
    (version / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"pyc")
    # A new version becomes current (as after a sync while a job ran); the old one goes.
    (current.parent / "v2").mkdir()
    current.unlink()
    current.symlink_to("v2")
    answer = agent("prepare-sync", "--base", str(base), "--code-dir", str(current))
    jobs = base / "jobs"
    assert answer["moved"] == {"job-a": str(jobs / "job-a" / "workdir"),
                               "job-b": str(jobs / "job-b" / "workdir")}  # fmt: skip
    assert not version.exists()
    assert (jobs / "job-a" / "workdir" / "out" / "a.txt").read_text() == "a.txt"
    assert (jobs / "job-b" / "workdir" / "out" / "b.txt").read_text() == "b.txt"
    assert not (jobs / "job-a" / "workdir" / "train.py").exists()  # synced code just goes
    assert not list(jobs.rglob("*.pyc"))
    state = json.loads((jobs / "job-b" / "state.json").read_text())
    assert state["workdir_outputs"] == str(jobs / "job-b" / "workdir")


def test_a_file_a_finished_job_wrote_where_the_next_sync_puts_one_is_kept(
    tmp_path: Path,
) -> None:
    # The job ended in the current version (no new version is made), and the local tree now
    # has a file at the same path (a local run wrote results.json and it is not ignored).
    base = tmp_path / "base"
    current = base / "code" / "proj" / "current"

    def agent(*args: str, stdin: str = "") -> dict[str, object]:
        done = subprocess.run([sys.executable, str(AGENT), *args], input=stdin,
                              capture_output=True, text=True, check=True)  # fmt: skip
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    prepare = ("prepare-sync", "--base", str(base), "--code-dir", str(current))
    version = Path(str(agent(*prepare)["dir"]))
    (version / ".runctl").mkdir()
    (version / ".runctl" / "manifest.json").write_text(
        json.dumps({"files": {"train.py": [1, "0" * 64, False]}})
    )
    (version / "train.py").write_text("x")
    job_dir = base / "jobs" / "job-a"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"workdir": str(version)}))
    (job_dir / "state.json").write_text(json.dumps({"state": "succeeded"}))
    (version / "results.json").write_text('{"acc": 0.9}')
    incoming = json.dumps({"files": ["train.py", "results.json", "../escape"]})
    answer = agent(*prepare, "--paths-on-stdin", stdin=incoming)
    assert answer["dir"] == str(version)
    assert answer["moved"] == {"job-a": str(job_dir / "workdir")}
    assert (job_dir / "workdir" / "results.json").read_text() == '{"acc": 0.9}'
    assert not (version / "results.json").exists() and (version / "train.py").exists()
