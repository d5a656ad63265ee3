"""A user of the original (Rust) runctl runs its documented command lines verbatim, and they work.

Every line of tests/fixtures/seed_commands.txt marked "here: ok" (every line that worked in
the seed, and a few the seed's own docs got wrong that are accepted now) runs through bash,
as written, with `runctl` on PATH, against the stand-ins: a moto server for EC2/IAM/S3 whose
instances are the loopback sshd (the `runctl:ssh-endpoint` tag, set by a tagger thread as soon
as an instance exists), the fake RunPod API whose pods are that sshd too, SeaweedFS for the
`runctl s3` lines. Lines that run until Ctrl-C (`--watch`, `top`) must show output and then
stop on SIGINT. Old spellings print a `note:` on stderr, never on stdout. docs/migrating.md
must name every seed command and flag, and every line intentionally left unsupported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.providers.aws.conftest import MotoAWS
from tests.recover.conftest import Tagger
from tests.seed.corpus import SeedLine, load

pytestmark = pytest.mark.integration
MIGRATING = REPO / "docs" / "migrating.md"
ID = re.compile(r"^(i|vol)-[0-9a-f]+$")

# A training script of the seed's docs: prints its arguments, saves a checkpoint with its
# metadata (the seed's `checkpoints/` convention, or where runctl says), writes an output.
SCRIPT = """\
import json, os, pathlib, sys
print("args:", " ".join(sys.argv[1:]), flush=True)
ckpts = pathlib.Path(os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints")
ckpts.mkdir(parents=True, exist_ok=True)
(ckpts / "checkpoint_epoch_1.pt").write_bytes(b"weights")
(ckpts / "checkpoint_epoch_1.json").write_text(json.dumps({"epoch": 1, "loss": 0.5}))
out = os.environ.get("RUNCTL_OUTPUT_DIR")
if out:
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(out) / "done.txt").write_text("ok\\n")
print("Training complete", flush=True)
"""
SCRIPTS = ["training/train_mnist.py", "training/train.py", "training/train_mnist_e2e.py",
           "train.py", "script.py"]  # fmt: skip
CHECKPOINTS = ["checkpoint_epoch_5.pt", "epoch_10.pt", "best.pt", "final_checkpoint.pt",
               *(f"checkpoint_epoch_{n}.pt" for n in (1, 2, 3, 4, 6, 7))]  # fmt: skip


def _project(root: Path) -> Path:
    (root / ".git").mkdir(parents=True)  # the seed's project marker
    for rel in SCRIPTS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(SCRIPT)
    ckpts = root / "checkpoints"
    ckpts.mkdir()
    for i, name in enumerate(CHECKPOINTS):
        (ckpts / name).write_bytes(b"w" * (100 + i))
        (ckpts / name).with_suffix(".json").write_text(
            json.dumps({"epoch": i, "loss": 1 / (i + 1)})
        )
        os.utime(ckpts / name, (1_700_000_000 + i, 1_700_000_000 + i))
    return root


class Shell:
    """Runs a seed line through bash as a user's terminal or script would."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.vars: dict[str, str] = {"INSTANCE_TYPE": "t3.micro", "SPOT_FLAG": "--spot",
                                     "PROJECT_NAME": "seedproj"}  # fmt: skip

    def text(self, line: SeedLine) -> str:
        text = line.command.replace("i-xxx", "$INSTANCE_ID").replace(
            "<instance-id>", "$INSTANCE_ID"
        )
        return text.replace("s3://bucket/", f"s3://{self.vars['BUCKET']}/")

    def run(self, line: SeedLine, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        text = self.text(line)
        assigned = re.match(r"^([A-Z_]+)=\$\(", text)
        script = text + (f' && printf "%s" "${assigned.group(1)}"' if assigned else "")
        # A user at the terminal answers "y" where runctl now asks before deleting.
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env={**self.env, **self.vars},
                              input="y\n", capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        assert done.returncode == 0, (
            f"{line.command}\n{done.stdout}\n{done.stderr}{self.log(done)}"
        )
        assert "Traceback" not in done.stderr, done.stderr
        if assigned:
            captured = done.stdout.strip().splitlines()
            # What the seed promised: the id is the (last) line. Without 2>&1 or a grep,
            # stdout is exactly the id: the note about the old spelling went to stderr.
            assert captured and ID.match(captured[-1]), f"{line.command}: {done.stdout!r}"
            if "2>&1" not in text and "grep" not in text:
                assert len(captured) == 1, f"{line.command}: {done.stdout!r}"
            assert all(c == captured[-1] for c in captured if ID.match(c))
            self.vars[assigned.group(1)] = captured[-1]
        return done

    def log(self, done: subprocess.CompletedProcess[str]) -> str:
        """The job's log when a failed line names one (to see why in the test report)."""
        job = re.search(r"runctl logs ([\w.-]+)", done.stderr)
        if not job:
            return ""
        shown = subprocess.run(["runctl", "logs", job.group(1)], cwd=self.cwd, env=self.env,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        return f"\n--- log of {job.group(1)}:\n{shown.stdout}{shown.stderr}"

    def until_ctrl_c(self, line: SeedLine, shows: str, timeout: float = 30) -> str:
        """Start a line that runs until Ctrl-C; once ``shows`` is on stdout, press Ctrl-C."""
        # stderr too: a full-screen `top` draws there when stdout is not a terminal.
        proc = subprocess.Popen(["bash", "-c", "exec " + self.text(line)], cwd=self.cwd,
                                env={**self.env, **self.vars}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, process_group=0)  # fmt: skip
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen = b""
        deadline = time.monotonic() + timeout
        try:
            while shows.encode() not in seen and time.monotonic() < deadline:
                assert proc.poll() is None, f"{line.command} ended: {seen[-2000:]!r}"
                seen += proc.stdout.read() or b""
                time.sleep(0.05)
            assert shows.encode() in seen, (
                f"{line.command} never showed {shows!r}: {seen[-500:]!r}"
            )
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
        assert proc.returncode in (0, 130, -signal.SIGINT), proc.returncode
        return seen.decode(errors="replace")


def _wait_idle(sh: Shell, instance: str) -> None:
    """The seed's examples start trainings one after another; the test scripts take well
    under a second, so wait for the last one as a user would before the next `aws train`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(["runctl", "jobs", "--on", f"aws:{instance}", "--json"],
                              env=sh.env, cwd=sh.cwd, capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0 and all(j["state"] in ("succeeded", "failed", "cancelled")
                                        for j in json.loads(done.stdout)):  # fmt: skip
            return
        time.sleep(0.2)


def _write_config(tmp_path: Path, **sections: dict[str, Any]) -> None:
    """Merge sections into the user config file (moto_aws may have written it first)."""
    import tomllib

    import tomli_w

    path = tmp_path / "xdg-config" / "runctl" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(tomli_w.dumps(data))


# Which stands a group of lines needs; lines go to the group of their longest prefix.
GROUPS: dict[str, tuple[str, ...]] = {
    "local": ("init", "local", "checkpoint", "top"),
    "s3": ("s3",),
    "runpod": ("runpod",),
    "aws-lifecycle": ("aws create", "aws ebs", "aws terminate"),
    "aws-train": ("aws train", "aws monitor", "aws processes", "aws status", "aws stop",
                  "aws start"),
    "workflow-resources": ("workflow", "resources"),
}  # fmt: skip
# The order of play inside a group: instances are made, used, stopped, started, terminated;
# `resources cleanup` (it terminates everything) comes last.
ORDER = [
    ("init", "local", "checkpoint", "top"), ("checkpoint cleanup",), ("s3",), ("runpod",),
    ("aws create", "aws ebs"), ("aws train", "aws monitor", "aws processes", "aws status"),
    ("aws stop",), ("aws start",), ("aws terminate",), ("workflow",),
    ("resources list", "resources summary", "resources insights"),
    ("resources cleanup --dry-run",), ("resources cleanup",),
]  # fmt: skip


def _slot(key: str, table: list[tuple[str, ...]]) -> int:
    matches = [(len(p), i) for i, prefixes in enumerate(table) for p in prefixes
               if key == p or key.startswith(p + " ")]  # fmt: skip
    assert matches, f"nothing matches {key!r}"
    return max(matches)[1]  # the most specific prefix


def _group(line: SeedLine) -> str:
    return list(GROUPS)[_slot(line.command_path, list(GROUPS.values()))]


def _phase(line: SeedLine) -> int:
    return _slot(line.command_path + (" --dry-run" if "--dry-run" in line.flags else ""), ORDER)


@pytest.fixture
def project_shell(tmp_path: Path) -> Shell:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("RUNPOD_API_KEY", "LYCEUM_API_KEY"):
        env.pop(name, None)
    sh = Shell(_project(tmp_path / "seedproj"), env)
    sh.vars["BUCKET"] = f"seed-{os.urandom(4).hex()}"
    return sh


def _aws(request: pytest.FixtureRequest, sh: Shell, tmp_path: Path) -> Iterator[None]:
    aws: MotoAWS = request.getfixturevalue("aws_ssh")
    sshd = request.getfixturevalue("sshd")
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=sh.vars["BUCKET"])
    s3.put_object(Bucket=sh.vars["BUCKET"], Key="data/train.csv", Body=b"x,y\n1,2\n")
    for profile in ("runctl-ssm-profile", "EC2-SSM-Profile"):
        aws.client("iam").create_instance_profile(InstanceProfileName=profile)
    # The "instance" has no instance profile: its AWS CLI (--data-s3/--output-s3) gets the
    # moto credentials the way runctl gives any job secrets, by config, not on the line.
    _write_config(tmp_path, aws={"wait_timeout_s": 30.0}, ssh={"control_persist_s": 5},
                  jobs={"secrets": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]})  # fmt: skip
    sh.env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    tagger = Tagger(aws, [f"127.0.0.1:{sshd.port}"])
    tagger.start()
    try:
        yield
    finally:
        tagger.stop()


def _stands(request: pytest.FixtureRequest, group: str, sh: Shell,
            tmp_path: Path) -> Iterator[None]:  # fmt: skip
    """Start what ``group`` needs; yield while its lines run."""
    if group == "s3":
        import boto3

        from tests.stands.seaweed import ACCESS_KEY, SECRET_KEY

        seaweed = request.getfixturevalue("seaweed")
        boto3.client(
            "s3",
            endpoint_url=seaweed.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=sh.vars["BUCKET"])
        sh.env.update(seaweed.env())
    if group == "runpod":
        fake = request.getfixturevalue("runpod_fake")
        sshd = request.getfixturevalue("sshd")
        fake.ssh_port = sshd.port
        _write_config(tmp_path, runpod={
            "api_url": fake.rest_url, "graphql_url": fake.graphql_url, "poll_interval_s": 0.01,
            "ssh_user": sshd.user, "ssh_key": str(sshd.key),
            "remote_dir": f".rp-seed-{os.urandom(4).hex()}"})  # fmt: skip
        sh.env["RUNPOD_API_KEY"] = fake.api_key
    if group.startswith(("aws", "workflow")):
        yield from _aws(request, sh, tmp_path)
        return
    yield


@pytest.mark.parametrize("group", list(GROUPS))
def test_seed_documented_lines_work_as_written(
    group: str, project_shell: Shell, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    lines = sorted((ln for ln in load() if ln.runs_here and _group(ln) == group), key=_phase)
    assert lines
    stands = _stands(request, group, project_shell, tmp_path)
    next(stands)
    try:
        _play(project_shell, lines)
    finally:
        next(stands, None)


def _play(sh: Shell, lines: list[SeedLine]) -> None:
    pool: list[str] = []  # instances made by the create lines, for the terminate lines
    for line in lines:
        started = time.monotonic()
        path = line.command_path
        if path == "runpod train" and "POD_ID" not in sh.vars:  # the pod the docs made
            made = sh.run(SeedLine("runctl runpod create --gpu 'NVIDIA GeForce RTX 4090' --json",
                                   "setup", "ok", "ok"))  # fmt: skip
            sh.vars["POD_ID"] = json.loads(made.stdout)["id"]
        own = path in ("aws create", "aws ebs create", "aws terminate")
        if path.startswith("aws") and not own and "INSTANCE_ID" not in sh.vars:
            # the instance the docs' earlier lines made
            sh.run(SeedLine("INSTANCE_ID=$(runctl aws create t3.micro -q)", "setup", "ok", "ok"))
        if path == "aws terminate":
            sh.vars["INSTANCE_ID"] = pool.pop()
        if path == "aws train":
            _wait_idle(sh, sh.vars["INSTANCE_ID"])
        if line.until_ctrl_c:
            shows = {"top": "runctl top", "aws processes": "PID", "s3 watch": "checkpoints/"}
            sh.until_ctrl_c(line, shows[path])
            print(f"{time.monotonic() - started:5.1f}s  {line.command}")
            continue
        done = sh.run(line)
        if path == "aws create":
            found = re.search(r"\bi-[0-9a-f]+\b", done.stdout)
            made_id = sh.vars.pop("INSTANCE_ID", None) or (found.group(0) if found else "")
            assert made_id, done.stdout
            pool.append(made_id)
        if path == "checkpoint resume":
            assert "note: `checkpoint resume" in done.stderr
        if line.flags == ["--force"] and path == "resources cleanup":
            assert "note: `--force`" in done.stderr and "--yes" in done.stderr
        print(f"{time.monotonic() - started:5.1f}s  {line.command}")


SEED_COMMANDS = [
    "local", "exec", "aws create", "aws train", "aws monitor", "aws stop", "aws start",
    "aws terminate", "aws processes", "aws status", "aws wait", "aws ebs create", "aws ebs list",
    "aws ebs attach", "aws ebs detach", "aws ebs delete", "aws ebs pre-warm", "aws ebs snapshot",
    "snapshot-list", "restore", "aws auto-resume", "docker build", "push", "build-push",
    "monitor", "checkpoint list", "checkpoint info", "checkpoint resume", "checkpoint cleanup",
    "s3 upload", "s3 download", "s3 sync", "s3 list", "s3 cleanup", "s3 watch", "s3 review",
    "transfer", "resources list", "resources summary", "resources insights",
    "resources cleanup", "resources stop-all", "status", "top", "workflow train", "init",
    "config show", "config set", "config validate", "runpod create", "runpod train",
    "runpod monitor", "runpod download",
]  # fmt: skip


def test_migrating_doc_names_every_seed_command_flag_and_unsupported_line() -> None:
    doc = MIGRATING.read_text()
    table = "\n".join(ln for ln in doc.splitlines() if ln.startswith("|"))
    missing = []
    for line in load():
        if f"`{line.command_path}" not in table and f"`runctl {line.command_path}" not in table:
            missing.append(f"command {line.command_path!r} ({line.sources})")
        for flag in line.flags if line.runs_here else ():  # the others: in the list below
            if flag not in table:
                missing.append(f"flag {flag} of {line.command_path} ({line.sources})")
        if not line.runs_here and line.command not in doc:
            missing.append(f"unsupported line {line.command!r} ({line.sources})")
    # Every command of the seed's tree (seed-runctl-features.md §1), documented or not.
    for path in SEED_COMMANDS:
        if f"`runctl {path}" not in table and f"`{path}" not in table:
            missing.append(f"seed command {path!r}")
    assert not missing, "docs/migrating.md lacks:\n" + "\n".join(missing)
