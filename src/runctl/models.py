"""Plain data passed between layers: frozen dataclasses and enums, no behaviour beyond parsing."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class InstanceState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


class JobState(enum.StrEnum):
    SUBMITTING = "submitting"  # recorded locally, agent not started yet
    SETUP = "setup"  # agent installing requirements
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    LOST = "lost"  # agent gone without writing an exit code

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED}


@dataclass(frozen=True)
class SSHTarget:
    """How to reach a host with OpenSSH; ``host`` may be an alias from ~/.ssh/config."""

    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    options: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


@dataclass(frozen=True)
class Host:
    """A registered SSH host (``runctl hosts add``)."""

    name: str
    target: SSHTarget
    remote_dir: str = ".runctl"
    python: str = "python3"
    hourly_usd: float | None = None
    created_at: str = ""


@dataclass(frozen=True)
class Instance:
    """A machine runctl can run on: a registered host or a cloud instance."""

    provider: str
    instance_id: str
    name: str
    state: InstanceState = InstanceState.RUNNING
    ssh: SSHTarget | None = None
    remote_dir: str = ".runctl"  # relative paths are from the login home
    python: str = "python3"
    hourly_usd: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completed:
    """The result of a command run through a Transport."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


@dataclass(frozen=True)
class SyncStats:
    files_total: int
    files_sent: int
    files_deleted: int
    bytes_sent: int
    skipped: bool  # nothing to do: manifests matched without a network round trip
    seconds: float


@dataclass(frozen=True)
class JobSpec:
    """Everything the agent needs to run a job; serialised to ``job.json`` on the host."""

    job_id: str
    name: str
    project: str
    argv: tuple[str, ...]  # the user's command: script + args, or a plain command
    kind: str  # "script" (a .py or executable file in the project) | "command"
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""  # absolute path on the host (filled at submit)
    checkpoint_dir: str = ""
    output_dir: str = ""
    resume_from: str | None = None
    resume: bool = True
    install_requirements: bool = True
    grace_s: float = 10.0
    # argv lists the agent runs before / after the command (e.g. S3 download / upload)
    pre_commands: tuple[tuple[str, ...], ...] = ()
    post_commands: tuple[tuple[str, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "project": self.project,
            "argv": list(self.argv),
            "kind": self.kind,
            "env": dict(self.env),
            "workdir": self.workdir,
            "checkpoint_dir": self.checkpoint_dir,
            "output_dir": self.output_dir,
            "resume_from": self.resume_from,
            "resume": self.resume,
            "install_requirements": self.install_requirements,
            "grace_s": self.grace_s,
            "pre_commands": [list(c) for c in self.pre_commands],
            "post_commands": [list(c) for c in self.post_commands],
        }


@dataclass(frozen=True)
class Job:
    """A job as recorded in the local state database."""

    job_id: str
    name: str
    project: str
    provider: str
    instance_id: str
    state: JobState
    argv: tuple[str, ...]
    job_dir: str
    workdir: str
    checkpoint_dir: str
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)
