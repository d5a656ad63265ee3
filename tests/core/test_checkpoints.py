"""Checkpoint commands over a local directory and a job's directory on an SSH host."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runctl.storage.checkpoints import inspect_checkpoint, list_checkpoints, step_of
from tests.conftest import CLI, REPO, job_id_of


def _touch(directory: Path, name: str, age_s: float = 0) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    t = time.time() - age_s
    import os

    os.utime(path, (t, t))
    return path


def test_order_by_step_then_mtime(tmp_path: Path) -> None:
    _touch(tmp_path, "ckpt_epoch_10.pt", age_s=50)
    _touch(tmp_path, "ckpt_epoch_9.pt", age_s=10)
    _touch(tmp_path, "sub/model-step-100.safetensors", age_s=100)
    _touch(tmp_path, "notes.txt")
    names = [c.path.name for c in list_checkpoints(tmp_path)]
    assert names == ["ckpt_epoch_9.pt", "ckpt_epoch_10.pt", "model-step-100.safetensors"]
    assert step_of("checkpoint-0042.ckpt") == 42 and step_of("last.pt") is None


def test_agent_and_library_agree_on_order(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "agent", REPO / "src/runctl/agent/runctl_agent.py"
    )
    assert spec and spec.loader
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    for i, name in enumerate(["a_step_3.pt", "b_step_20.pth", "z.ckpt", "ep7.safetensors"]):
        _touch(tmp_path, name, age_s=100 - i)
    # directories count whole: an HF checkpoint, one still being written, a DCP one
    _touch(tmp_path, "hf/checkpoint-5/model.safetensors", age_s=50)
    (tmp_path / "hf/checkpoint-5/trainer_state.json").write_text('{"global_step": 5}')
    _touch(tmp_path, "hf/checkpoint-9/model.safetensors", age_s=40)
    _touch(tmp_path, "dcp/step_30/.metadata", age_s=30)
    _touch(tmp_path, "dcp/step_30/__0_0.distcp", age_s=30)
    _touch(tmp_path, "mine/checkpoint-7/weights.pt", age_s=45)  # not HF's: its own files
    _touch(tmp_path, "hf/tmp-checkpoint-11/model.safetensors", age_s=35)  # renamed when done
    (tmp_path / "hf/tmp-checkpoint-11/trainer_state.json").write_text('{"global_step": 11}')
    ours = [(str(c.path), c.kind, c.step, c.complete) for c in list_checkpoints(tmp_path)]
    theirs = agent.list_checkpoints(str(tmp_path))
    assert [(r["path"], r["kind"], r["step"], r["complete"]) for r in theirs] == ours
    assert [Path(p).name for p, *_ in ours] == [
        "a_step_3.pt", "checkpoint-5", "ep7.safetensors", "checkpoint-7", "checkpoint-9",
        "tmp-checkpoint-11", "b_step_20.pth", "z.ckpt", "step_30"]  # fmt: skip
    assert [c for *_, c in ours][4:6] == [False, False]  # no trainer_state.json; tmp-
    assert [k for _p, k, _s, _c in ours][3:5] == ["dir", "hf"]


def test_cli_list_and_cleanup_local(cli: CLI, tmp_path: Path) -> None:
    d = tmp_path / "ck"
    for i in range(1, 6):
        _touch(d, f"ckpt_epoch_{i:04d}.pt", age_s=10 - i)
        (d / f"ckpt_epoch_{i:04d}.json").write_text(json.dumps({"epoch": i}))
    listed = json.loads(cli("checkpoint", "list", str(d), "--json").stdout)
    assert [Path(r["path"]).name for r in listed][-1] == "ckpt_epoch_0005.pt"
    dry = cli("checkpoint", "cleanup", str(d), "--keep-last-n", "2", "--dry-run", "--json")
    assert len(json.loads(dry.stdout)["would_delete"]) == 3
    assert len(list(d.glob("*.pt"))) == 5
    refused = cli("checkpoint", "cleanup", str(d), "--keep-last-n", "2", input="n\n")
    assert refused.returncode != 0 and len(list(d.glob("*.pt"))) == 5
    done = cli("checkpoint", "cleanup", str(d), "--keep-last-n", "2", input="y\n")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in d.iterdir()) == [
        "ckpt_epoch_0004.json", "ckpt_epoch_0004.pt", "ckpt_epoch_0005.json",
        "ckpt_epoch_0005.pt",
    ]  # fmt: skip


def test_info_reads_sidecar_then_torch(tmp_path: Path) -> None:
    path = _touch(tmp_path, "ckpt_epoch_0003.pt")
    (tmp_path / "ckpt_epoch_0003.json").write_text(json.dumps({"epoch": 3, "loss": 0.25}))
    info = inspect_checkpoint(path)
    assert info["epoch"] == 3 and info["loss"] == 0.25 and info["source"] == "sidecar"
    torch = pytest.importorskip("torch")
    real = tmp_path / "real.pt"
    torch.save({"epoch": 7, "loss": torch.tensor(0.5), "model": {"w": torch.zeros(3, 4)}}, real)
    info = inspect_checkpoint(real)
    assert info["epoch"] == 7 and info["loss"] == 0.5 and info["tensor_elements"] == 13


@pytest.mark.integration
def test_job_checkpoints_on_ssh_host_and_resume(cli: CLI, ssh_config: Path, project: Path) -> None:
    assert cli("hosts", "add", "testhost", "--remote-dir", f".runctl-ck-{time.time_ns()}")\
        .returncode == 0  # fmt: skip
    (project / "ck.py").write_text(
        "import json, os, pathlib, sys\n"
        "d = pathlib.Path(os.environ['RUNCTL_CHECKPOINT_DIR'])\n"
        "print('resume=' + os.environ['RUNCTL_RESUME_FROM'], 'args=', sys.argv[1:])\n"
        "start = len(list(d.glob('*.pt')))\n"
        "for i in range(start + 1, start + 4):\n"
        "    (d / f'step_{i:03d}.pt').write_bytes(b'w' * i)\n"
        "    (d / f'step_{i:03d}.json').write_text(json.dumps({'step': i, 'loss': 1 / i}))\n"
    )
    job = job_id_of(cli("run", "--on", "testhost", "--wait", "ck.py", cwd=project))
    listed = json.loads(cli("checkpoint", "list", f"job:{job}", "--json").stdout)
    assert [Path(r["path"]).name for r in listed] == ["step_001.pt", "step_002.pt", "step_003.pt"]
    info = json.loads(cli("checkpoint", "info", f"job:{job}", "--json").stdout)
    assert info["step"] == 3 and info["source"] == "sidecar"
    resumed = cli("checkpoint", "resume", job, "--resume-arg", "--follow", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert "step_003.pt" in resumed.stdout and "'--resume'" in resumed.stdout
    newest = json.loads(cli("jobs", "--json").stdout)[0]["job_id"]
    cleaned = cli("checkpoint", "cleanup", f"job:{newest}", "--keep-last-n", "2", "--yes",
                  "--json")  # fmt: skip
    assert len(json.loads(cleaned.stdout)["deleted"]) == 4, cleaned.stderr
    left = json.loads(cli("checkpoint", "list", f"job:{newest}", "--json").stdout)
    assert [Path(r["path"]).name for r in left] == ["step_005.pt", "step_006.pt"]


@pytest.mark.integration
def test_hf_style_directories_over_ssh_list_info_resume_and_cleanup_whole(
    cli: CLI, ssh_config: Path, project: Path
) -> None:
    torch = pytest.importorskip("torch")
    assert cli("hosts", "add", "testhost", "--remote-dir", f".runctl-hf-{time.time_ns()}")\
        .returncode == 0  # fmt: skip
    torch.save({"global_step": 7, "epoch": 1, "w": torch.zeros(2, 3)}, project / "blob.pt")
    (project / "hfck.py").write_text(
        "import json, os, pathlib, shutil, sys\n"
        "d = pathlib.Path(os.environ['RUNCTL_CHECKPOINT_DIR'])\n"
        "print('resume=' + os.environ['RUNCTL_RESUME_FROM'],\n"
        "      'step=' + os.environ.get('RUNCTL_RESUME_STEP', ''), 'args=', sys.argv[1:])\n"
        "if sys.argv[1:]:\n"
        "    print('isdir', os.path.isdir(sys.argv[-1]))  # from the job's own cwd\n"
        "start = int(os.environ.get('RUNCTL_RESUME_STEP') or 0)\n"
        "for step in (start + 1, start + 2):\n"
        "    c = d / f'checkpoint-{step}'\n"
        "    c.mkdir(exist_ok=True)\n"
        "    shutil.copy('blob.pt', c / 'optimizer.pt')\n"
        "    (c / 'trainer_state.json').write_text(json.dumps({'global_step': step}))\n"
        "(d / f'checkpoint-{start + 3}').mkdir()  # still being written when the job ended\n"
    )
    job = job_id_of(cli("run", "--on", "testhost", "--wait", "hfck.py", cwd=project))
    listed = json.loads(cli("checkpoint", "list", f"job:{job}", "--json").stdout)
    assert [(r["name"], r["kind"], r["step"], r["complete"]) for r in listed] == [
        ("checkpoint-1", "hf", 1, True), ("checkpoint-2", "hf", 2, True),
        ("checkpoint-3", "hf", 3, False)]  # fmt: skip
    info = json.loads(cli("checkpoint", "info", f"job:{job}", "--json").stdout)
    assert (info["name"], info["step"], info["kind"]) == ("checkpoint-2", 2, "hf")
    inner = cli("checkpoint", "info", f"job:{job}:checkpoint-1/optimizer.pt", "--json")
    assert inner.returncode == 0, inner.stderr
    inner_info = json.loads(inner.stdout)  # read with torch from a copy that kept its suffix
    assert inner_info["global_step"] == 7 and inner_info["source"] == "torch"
    assert inner_info["path"].endswith("/checkpoint-1/optimizer.pt")
    again = cli("run", "--on", "testhost", "-f", "hfck.py", cwd=project)  # the same command
    assert again.returncode == 0, again.stderr
    assert f"resume={listed[1]['path']} step=2" in again.stdout
    assert "[runctl] skipped checkpoint checkpoint-3 (no trainer_state.json (still being " \
        "written?)); resuming from checkpoint-2" in again.stdout  # fmt: skip
    rerun = json.loads(cli("jobs", "--json").stdout)[0]["job_id"]
    resumed = cli("checkpoint", "resume", rerun, "--resume-arg", "--follow", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    newest = listed[1]["path"].replace("checkpoint-2", "checkpoint-4")
    assert newest.startswith("/") and f"resume={newest} step=4" in resumed.stdout
    assert f"'--resume', '{newest}'" in resumed.stdout and "isdir True" in resumed.stdout
    second = json.loads(cli("jobs", "--json").stdout)[0]["job_id"]
    dry = cli("checkpoint", "cleanup", f"job:{second}", "--keep-last-n", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    cleaned = cli("checkpoint", "cleanup", f"job:{second}", "--keep-last-n", "1", "--yes",
                  "--json")  # fmt: skip
    deleted = [Path(p).name for p in json.loads(cleaned.stdout)["deleted"]]
    assert deleted == [f"checkpoint-{i}" for i in range(1, 6)], cleaned.stderr
    assert all(f"would delete {p}" in dry.stderr for p in json.loads(cleaned.stdout)["deleted"])
    left = json.loads(cli("checkpoint", "list", f"job:{second}", "--json").stdout)
    assert [(r["name"], r["complete"]) for r in left] == [
        ("checkpoint-6", True), ("checkpoint-7", False)]  # fmt: skip
    # --from takes a name as `checkpoint list` shows it; the job still gets an absolute path
    named = cli("checkpoint", "resume", second, "--from", "checkpoint-6", "--resume-arg", "-f",
                cwd=project)  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert f"resume={left[0]['path']} step=6" in named.stdout and "isdir True" in named.stdout
    assert named.stdout.count("'--resume'") == 1  # replaces the earlier job's, not added
