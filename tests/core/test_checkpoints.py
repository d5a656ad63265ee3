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
    ours = [str(c.path) for c in list_checkpoints(tmp_path)]
    assert agent.list_checkpoints(str(tmp_path)) == ours


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
