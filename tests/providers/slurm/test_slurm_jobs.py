"""`run --on slurm:local`: a real single-node Slurm (tests/stands/slurm.py) runs the agent."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log
from tests.stands.slurm import SlurmStand
from tests.stands.sshd import DEFAULT_USER

pytestmark = pytest.mark.integration


def _status(cli: CLI, job: str) -> dict:  # type: ignore[type-arg]
    done = cli("status", job, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _slurm_id(runctl_home: Path, job: str) -> str:
    found = list(runctl_home.glob(f"slurm/jobs/{job}/slurm.json"))
    assert found, "no slurm.json in the job dir"
    return str(json.loads(found[0].read_text())["slurm_job_id"])


ENVS = """import os, time
time.sleep(1.2)  # a measurable run for the cost (timestamps have whole seconds)
names = ("RUNCTL_NODE_RANK", "RUNCTL_NUM_NODES", "RANK", "WORLD_SIZE")
print(" ".join(f"{n}={os.environ.get(n)}" for n in names))
for name in ("MASTER_ADDR", "MASTER_PORT", "RUNCTL_NODE_IPS", "CUDA_VISIBLE_DEVICES"):
    print(f"{name}={os.environ.get(name)}")
"""


def test_run_follow_gres_and_costs(
    cli: CLI, project: Path, slurm: SlurmStand, runctl_home: Path
) -> None:
    (project / "envs.py").write_text(ENVS)
    done = cli("run", "--on", "slurm:local", "--gpus-per-node", "1", "--time", "5:00",
               "--partition", "debug", "--follow", "envs.py", cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = [j for j in json.loads(cli("jobs", "--json").stdout) if j["on"] == "slurm:local"][0]
    assert job["state"] == "succeeded"
    port = 20000 + int(_slurm_id(runctl_home, job["job_id"])) % 20000
    # One node: rank 0 of 1, its own address as the rendezvous; the fake GPU from gres.
    assert "CUDA_VISIBLE_DEVICES=0" in done.stdout
    assert f"MASTER_PORT={port}" in done.stdout
    assert "RUNCTL_NODE_RANK=0 RUNCTL_NUM_NODES=1 RANK=0 WORLD_SIZE=1" in done.stdout
    assert "MASTER_ADDR=127.0.0.1" in done.stdout  # the node's NodeAddr
    job_dir = runctl_home / "slurm" / "jobs" / job["job_id"]
    script = (job_dir / "job.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --partition=debug" in script
    assert "#SBATCH --time=5:00" in script and "#SBATCH --requeue" in script
    slurm_id = _slurm_id(runctl_home, job["job_id"])
    shown = slurm.run("scontrol", "show", "job", "-o", slurm_id)
    assert "TresPerNode=gres:gpu:1" in shown and "TimeLimit=00:05:00" in shown
    spec = json.loads((job_dir / "job.json").read_text())
    assert spec["hourly_usd"] == 2.5 and spec["placement"]["nodes"] == 1
    shown = _status(cli, job["job_id"])
    assert shown["scheduler"]["hourly_usd"] == 2.5 and shown["scheduler"]["slurm_job_id"]
    assert 0 < shown["cost_usd"] < 2.5 * 60 / 3600  # the run's seconds at $2.50/node-hour


def test_pending_cancel_queued_and_running(
    cli: CLI, project: Path, slurm: SlurmStand, runctl_home: Path
) -> None:
    # The blocker takes both GPUs, so the next job stays queued (PENDING) in Slurm.
    blocker = job_id_of(cli("run", "--on", "slurm:local", "--gpus-per-node", "2", "hello.py",
                            "--", "--lines", "300", "--interval", "0.1", cwd=project))  # fmt: skip
    wait_for_log(cli, blocker, "line 3")
    queued = job_id_of(cli("run", "--on", "slurm:local", "--gpus-per-node", "2", "--nodes", "1",
                           "hello.py", cwd=project))  # fmt: skip
    status = _status(cli, queued)
    assert status["state"] == "setup", status  # pending in Slurm's queue, not "lost"
    assert status["scheduler"]["slurm_state"] == "PENDING"
    listed = {j["job_id"]: j["state"] for j in json.loads(cli("jobs", "--json").stdout)}
    assert listed[queued] == "setup" and listed[blocker] == "running"
    done = cli("cancel", queued, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    shown = slurm.run("scontrol", "show", "job", "-o", _slurm_id(runctl_home, queued))
    assert "JobState=CANCELLED" in shown
    # A running job: scancel's SIGTERM reaches the agent, which stops the job and says so.
    done = cli("cancel", blocker, "--json", "--grace", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "cancelled"
    assert cli("wait", blocker).returncode != 0
    assert "line 300" not in cli("logs", blocker).stdout


def test_failed_exit_code_and_usage_errors(cli: CLI, project: Path, slurm: SlurmStand) -> None:
    done = cli("run", "--on", "slurm:local", "--wait", "hello.py", "--", "--exit-code", "3",
               cwd=project)  # fmt: skip
    assert done.returncode == 3, done.stderr
    bad = cli("run", "--on", "slurm:local", "--time", "soon", "hello.py", cwd=project)
    assert bad.returncode != 0 and "invalid time limit" in bad.stderr
    local = cli("run", "--on", "local", "--nodes", "2", "hello.py", cwd=project)
    assert local.returncode != 0 and "--nodes needs a batch scheduler" in local.stderr


TRAIN = """
import os, sys, time
ckpt_dir = os.environ["RUNCTL_CHECKPOINT_DIR"]
resume = os.environ.get("RUNCTL_RESUME_FROM", "")
start = int(open(resume).read()) if resume else 0
print(f"resume={resume or 'none'} start={start}", flush=True)
for step in range(start + 1, start + 400):
    if step % 5 == 0:
        with open(os.path.join(ckpt_dir, f"step_{step:04d}.pt"), "w") as fh:
            fh.write(str(step))
        print(f"saved {step}", flush=True)
    if resume and step >= start + 3:
        print("done", flush=True)
        sys.exit(0)
    time.sleep(0.05)
"""


def test_requeue_resumes_from_checkpoint(
    cli: CLI, project: Path, slurm: SlurmStand, runctl_home: Path
) -> None:
    (project / "train.py").write_text(TRAIN)
    job = job_id_of(cli("run", "--on", "slurm:local", "--retries", "2", "train.py",
                        cwd=project))  # fmt: skip
    wait_for_log(cli, job, "saved 10")
    slurm_id = _slurm_id(runctl_home, job)
    slurm.run("scontrol", "requeue", slurm_id)
    # A requeued job is held back by a begin time; let it go at once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = slurm.run("scontrol", "show", "job", "-o", slurm_id)
        if "JobState=PENDING" in shown:
            assert _status(cli, job)["state"] == "setup"  # requeued: pending, not preempted
            slurm.run("scontrol", "update", f"jobid={slurm_id}", "StartTime=now")
            break
        time.sleep(0.2)
    done = cli("wait", job, "--timeout", "60")
    assert done.returncode == 0, done.stderr + cli("logs", job).stdout
    log = cli("logs", job).stdout
    assert "resume=none start=0" in log
    assert "restart 1: requeued by Slurm" in log
    # The second run started from the newest checkpoint the first one wrote.
    found = re.search(r"^resume=(\S+)/step_(\d{4})\.pt start=(\d+)$", log, re.MULTILINE)
    assert found, log
    assert int(found[2]) == int(found[3]) >= 10
    assert "done" in log
    assert _status(cli, job)["scheduler"]["restarts"] == 1


def test_login_node_over_ssh(
    cli: CLI, project: Path, slurm: SlurmStand, sshd: object, tmp_path: Path
) -> None:
    cfg = tmp_path / "xdg-config" / "runctl" / "config.toml"
    cfg.write_text(f'[ssh]\nconfig_file = "{sshd.ssh_config}"\n'  # type: ignore[attr-defined]
                   f'[slurm]\nconf_file = "{slurm.conf}"\n')  # fmt: skip
    added = cli("hosts", "add", "login", "testhost", "--remote-dir",
                f".runctl-slurm-{time.time_ns()}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    done = cli("run", "--on", "slurm:login", "--follow", "hello.py", "--", "--lines", "2",
               cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "line 2" in done.stdout
    job = json.loads(cli("jobs", "--json").stdout)[0]
    assert job["on"] == "slurm:login" and job["state"] == "succeeded"
    assert f"UserId={DEFAULT_USER}(" in slurm.run("scontrol", "show", "job", "-o")
    assert "synced" in done.stderr


DIST = """import os
import torch
import torch.distributed as dist

os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # both "nodes" of the stand are this machine
dist.init_process_group("gloo", init_method="env://")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print(f"rank={dist.get_rank()} world={dist.get_world_size()} sum={value.item():g} "
      f"node={os.environ['SLURMD_NODENAME']} ips={os.environ['RUNCTL_NODE_IPS']}", flush=True)
dist.destroy_process_group()
"""


def test_two_node_job_with_srun(
    cli: CLI, project: Path, slurm: SlurmStand, runctl_home: Path
) -> None:
    (project / "dist.py").write_text(DIST)
    done = cli("run", "--on", "slurm:local", "--nodes", "2", "--partition", "multi",
               "--wait", "dist.py", cwd=project)  # fmt: skip
    job = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stderr + cli("logs", job).stdout
    rank0 = cli("logs", job).stdout
    assert f"rank=0 world=2 sum=3 node={slurm.node} ips=127.0.0.1,127.0.0.1" in rank0
    rank1 = cli("logs", job, "--node", "1").stdout
    assert f"rank=1 world=2 sum=3 node={slurm.node}-2" in rank1
    assert "#SBATCH --nodes=2" in (runctl_home / "slurm" / "jobs" / job / "job.sbatch").read_text()


def test_two_node_job_waits_for_every_rank(cli: CLI, project: Path, slurm: SlurmStand) -> None:
    # Rank 0 succeeds at once; rank 1 fails two seconds later: the job fails with its code.
    (project / "ranks.py").write_text(
        "import os, sys, time\n"
        "if os.environ['RUNCTL_NODE_RANK'] == '1':\n"
        "    time.sleep(2)\n"
        "    sys.exit(4)\n"
        "print('rank 0 done', flush=True)\n"
    )
    job = job_id_of(cli("run", "--on", "slurm:local", "--nodes", "2", "--partition", "multi",
                        "ranks.py", cwd=project))  # fmt: skip
    wait_for_log(cli, job, "rank 0 done")
    assert cli("wait", job, "--timeout", "60").returncode == 4
    assert _status(cli, job)["state"] == "failed"


def test_a_secret_reaches_a_slurm_job_and_is_gone_when_it_ends(
    cli: CLI, project: Path, slurm: SlurmStand, runctl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "slurm-token-" + str(time.time_ns())
    monkeypatch.setenv("HF_TOKEN", value)
    (project / "show_token.py").write_text(
        "import hashlib, os\n"
        "print('sha', hashlib.sha256(os.environ['HF_TOKEN'].encode()).hexdigest())\n"
    )
    done = cli("run", "--on", "slurm:local", "--secret", "HF_TOKEN", "--follow", "show_token.py",
               cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    import hashlib

    assert f"sha {hashlib.sha256(value.encode()).hexdigest()}" in done.stdout
    job = [j for j in json.loads(cli("jobs", "--json").stdout) if j["on"] == "slurm:local"][0]
    job_dir = runctl_home / "slurm" / "jobs" / job["job_id"]
    assert not (job_dir / "secrets.json").exists()
    for path in [p for p in runctl_home.rglob("*") if p.is_file()]:
        assert value.encode() not in path.read_bytes(), path
