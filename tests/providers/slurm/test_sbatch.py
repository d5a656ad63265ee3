"""sbatch script generation and placement options (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runctl.config import load
from runctl.errors import UsageError
from runctl.providers.slurm import SlurmProvider, parse_time, render_sbatch
from runctl.runtime import Runtime

SPEC = {"job_id": "train-abc123"}


def test_multi_node_script_uses_srun_and_requeue() -> None:
    options = {"nodes": 2, "gpus_per_node": 4, "partition": "gpu", "time": "1-00:00",
               "retries": 2}  # fmt: skip
    script = render_sbatch(SPEC, "/home/u/.runctl/jobs/train abc", "/usr/bin/python3",
                           "/home/u/.runctl/agent/a.py", options)  # fmt: skip
    lines = script.splitlines()
    for expected in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                     "#SBATCH --gres=gpu:4", "#SBATCH --partition=gpu",
                     "#SBATCH --time=1-00:00", "#SBATCH --requeue",
                     "#SBATCH --job-name=runctl-train-abc123",
                     "#SBATCH --open-mode=append"):  # fmt: skip
        assert expected in lines
    assert lines[-1] == (
        "exec srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=0 /usr/bin/python3 "
        "/home/u/.runctl/agent/a.py supervise --job-dir '/home/u/.runctl/jobs/train abc'"
    )
    assert 'if [ "${SLURM_RESTART_COUNT:-0}" -gt 2 ]; then' in lines
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


def test_single_node_without_retries_is_not_requeued() -> None:
    script = render_sbatch(SPEC, "/j", "python3", "/a.py", {"nodes": 1, "retries": 0})
    assert "#SBATCH --no-requeue" in script and "--gres" not in script
    assert script.rstrip().endswith("exec python3 /a.py supervise --job-dir /j")


def test_restart_past_retries_gives_up(tmp_path: Path) -> None:
    script = render_sbatch(SPEC, str(tmp_path), "python3", "/nonexistent.py", {"retries": 1})
    done = subprocess.run(["bash", "-c", script], env={"SLURM_RESTART_COUNT": "2"},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "restart 2 is past --retries 1; giving up" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("value", ["90", "2:00:00", "1-12", "1-12:30", "30:00"])
def test_time_limits_accepted(value: str) -> None:
    assert parse_time(value) == value


@pytest.mark.parametrize("value", ["soon", "1h", "2:00:00; rm -rf /", ""])
def test_time_limits_rejected(value: str) -> None:
    with pytest.raises(UsageError):
        parse_time(value)


def test_options_merge_config_defaults(runctl_home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[slurm]\npartition = "gpu"\ngpus_per_node = 8\nretries = 1\n')
    provider = SlurmProvider(Runtime(config=load(), home=runctl_home))
    merged = provider.options({"gpus_per_node": 2, "time": "10"})
    assert merged == {"partition": "gpu", "time": "10", "gpus_per_node": 2, "retries": 1,
                      "nodes": 1}  # fmt: skip
    with pytest.raises(UsageError):
        provider.options({"partition": "a b"})
