"""Configuration: TOML files merged over built-in defaults; every file may be partial.

Precedence (later wins): defaults < user file (``$RUNCTL_CONFIG`` or
``$XDG_CONFIG_HOME/runctl/config.toml``) < project file (nearest ``.runctl.toml`` upwards from the
working directory) < ``-c/--config FILE``. Keys are checked against ``SCHEMA`` so a typo is an
error with a suggestion, not a silently ignored setting.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.errors import ConfigError

PROJECT_FILE = ".runctl.toml"


@dataclass(frozen=True)
class Key:
    type: type
    default: Any
    help: str
    secret: bool = False  # never shown by `config show`; files holding it are made 0600
    choices: tuple[str, ...] = ()  # the allowed values of a string key (empty: any)
    lo: float | None = None  # numbers: smallest allowed value (all numbers must be finite)
    hi: float | None = None  # numbers: largest allowed value


SCHEMA: dict[str, Key] = {
    "defaults.on": Key(str, "local", "where `runctl run` runs without --on (local, ssh:HOST)"),
    "defaults.project": Key(str, "", "project name (default: the project root's directory name)"),
    "jobs.grace_s": Key(float, 10.0, "seconds between SIGTERM and SIGKILL on cancel", lo=0),
    "jobs.retention_days": Key(
        float, 0.0, "finished jobs older than this are pruned by `runctl jobs` (0 = keep)", lo=0
    ),
    "jobs.install_requirements": Key(bool, True, "install requirements.txt on remote hosts"),
    "jobs.secrets": Key(
        list, [], "env names every job gets from your environment as secrets (never stored)"
    ),
    "local.checkpoint_dir": Key(str, "", "base dir for local checkpoints (default: RUNCTL_HOME)"),
    "local.python": Key(str, "", "interpreter for local jobs (default: the one running runctl)"),
    "ssh.config_file": Key(str, "", "ssh_config file passed as -F (default: ~/.ssh/config)"),
    "ssh.connect_timeout_s": Key(int, 10, "ssh ConnectTimeout", lo=1),
    "ssh.control_persist_s": Key(int, 600, "keep the shared ssh connection open this long", lo=0),
    "ssh.sync_method": Key(
        str,
        "auto",
        "how trees are copied: auto (rsync, else tar), rsync, tar",
        choices=("auto", "rsync", "tar"),
    ),
    "ssh.reconnect_timeout_s": Key(
        float, 300.0, "how long `logs --follow` retries a lost host", lo=0
    ),
    "sync.max_files": Key(int, 20000, "code syncs of more files ask first (or need --yes)", lo=1),
    "sync.max_mb": Key(float, 500.0, "code syncs of more MB ask first (or need --yes)", lo=0),
    "checkpoint.keep_last_n": Key(int, 10, "checkpoints kept by `checkpoint cleanup`", lo=0),
    "aws.region": Key(str, "", "AWS region (default: the AWS SDK chain: AWS_REGION, profile)"),
    "aws.profile": Key(str, "", "AWS named profile (default: the SDK chain)"),
    "aws.endpoint_url": Key(str, "", "AWS-compatible endpoint for every AWS client (tests)"),
    "aws.s3_bucket": Key(str, "", "bucket for SSM command output and staging (SSM transport)"),
    "aws.transport": Key(
        str,
        "auto",
        "how to reach instances: auto (ssh, else ssm), ssh, ssm",
        choices=("auto", "ssh", "ssm"),
    ),
    "aws.ssh_user": Key(str, "", "SSH login user (default: from the AMI: ubuntu / ec2-user)"),
    "aws.ssh_key_file": Key(
        str, "", "private key for instances; KEY.pub is imported (default: runctl's own key)"
    ),
    "aws.key_name": Key(str, "", "existing EC2 key pair to launch with (default: import ours)"),
    "aws.security_group": Key(str, "", "security group id or name (default: runctl-ssh)"),
    "aws.ssh_cidr": Key(str, "0.0.0.0/0", "who may reach port 22 in the runctl-ssh group"),
    "aws.iam_instance_profile": Key(str, "", "instance profile for new instances (enables SSM)"),
    "aws.remote_dir": Key(str, ".runctl", "runctl's directory on instances (from the home)"),
    "aws.spot_timeout_s": Key(
        float, 300.0, "cancel a spot request not fulfilled by then", lo=0.001
    ),
    "aws.wait_timeout_s": Key(
        float, 600.0, "how long --wait waits for an instance state", lo=0.001
    ),
    "aws.gpu_ami_parameter": Key(
        str,
        "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/"
        "ami-id",
        "SSM parameter naming the AMI for GPU types ({arch}: x86_64/arm64)",
    ),
    "aws.cpu_ami_parameter": Key(
        str,
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}",
        "SSM parameter naming the AMI for other types",
    ),
    "aws.host_cli": Key(str, "aws", "AWS CLI on instances, for train --data-s3/--output-s3"),
    "aws.imds_url": Key(
        str, "http://169.254.169.254", "metadata service spot instances poll for notices"
    ),
    "aws.spot_poll_s": Key(
        float, 5.0, "seconds between spot-notice polls on spot instances", lo=0.001
    ),
    "watchdog.check_s": Key(
        float, 5.0, "seconds between the host watchdog's policy checks", lo=0.001
    ),
    "watchdog.shutdown_command": Key(
        str,
        "",
        "command a host runs to stop itself when a watchdog policy fires "
        "(AWS default: sudo -n shutdown -h now; local and SSH hosts: only when set)",
    ),
    "docker.base_image": Key(
        str, "python:3.11-slim", "base image of a generated Dockerfile (no Dockerfile found)"
    ),
    "docker.network": Key(str, "host", "docker build/run --network ('' for docker's default)"),
    "docker.gpus": Key(
        str,
        "auto",
        "containers get --gpus all: auto (if nvidia-smi), all, none",
        choices=("auto", "all", "none"),
    ),
    "docker.registry": Key(str, "", "registry `run --docker` pushes to for remote hosts"),
    "s3.endpoint_url": Key(str, "", "S3-compatible endpoint (MinIO, SeaweedFS); default AWS"),
    "s3.max_concurrency": Key(int, 16, "parallel S3 transfers (parts and files)", lo=1),
    "s3.multipart_threshold_mb": Key(int, 16, "files above this size upload in parts", lo=1),
    "runpod.api_key": Key(str, "", "RunPod API key (env RUNPOD_API_KEY wins)", secret=True),
    "runpod.api_url": Key(str, "https://api.runpod.io/v2", "RunPod REST v2 base URL"),
    "runpod.graphql_url": Key(str, "https://api.runpod.io/graphql", "RunPod GraphQL URL"),
    "runpod.ssh_user": Key(str, "root", "SSH login user on pods"),
    "runpod.ssh_key": Key(str, "", "private key for pods; KEY.pub is injected (default: ours)"),
    "runpod.remote_dir": Key(str, "/workspace/runctl", "runctl's directory on pods"),
    "runpod.default_gpu": Key(str, "NVIDIA GeForce RTX 4090", "GPU type id for `runpod create`"),
    "runpod.default_image": Key(
        str, "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", "image for `runpod create`"
    ),
    "runpod.disk_gb": Key(int, 50, "container disk of new pods (GB)", lo=1),
    "runpod.volume_gb": Key(int, 20, "persistent /workspace volume of new pods (GB)", lo=0),
    "runpod.cloud": Key(
        str, "SECURE", "SECURE or COMMUNITY cloud for new pods", choices=("SECURE", "COMMUNITY")
    ),
    "runpod.poll_interval_s": Key(
        float, 5.0, "seconds between status polls while waiting", lo=0.001
    ),
    "runpod.wait_timeout_s": Key(float, 1200.0, "how long create --wait waits for SSH", lo=0.001),
    "lyceum.api_key": Key(str, "", "Lyceum API key lk_... (env LYCEUM_API_KEY wins)", secret=True),
    "lyceum.api_url": Key(
        str, "https://api.lyceum.technology/api/v2/external", "Lyceum API base URL"
    ),
    "lyceum.ssh_user": Key(str, "lyceum", "SSH login user on VMs"),
    "lyceum.ssh_key": Key(str, "", "private key for VMs; KEY.pub is sent (default: ours)"),
    "lyceum.remote_dir": Key(str, ".runctl", "runctl's directory on VMs (from the home)"),
    "lyceum.default_profile": Key(str, "h100", "hardware profile for `lyceum create`"),
    "lyceum.max_duration": Key(
        str, "", "default --max-duration of new VMs (e.g. 8h); `lyceum reap` deletes overdue"
    ),
    "lyceum.poll_interval_s": Key(
        float, 5.0, "seconds between status polls while waiting", lo=0.001
    ),
    "lyceum.wait_timeout_s": Key(float, 900.0, "how long create --wait waits for SSH", lo=0.001),
    "costs.daily_budget_usd": Key(
        float, 0.0, "daily spend shown against in `top` (0 = none)", lo=0
    ),
    "costs.budget_action": Key(
        str,
        "warn",
        "on crossing a budget (`resources enforce`): warn, stop or terminate",
        choices=("warn", "stop", "terminate"),
    ),
    "costs.budget_warn_fraction": Key(
        float, 0.8, "warn once spend passes this share of a budget", lo=0, hi=1
    ),
    "costs.warn_hours": Key(float, 24.0, "flag instances running longer than this (hours)", lo=0),
    "costs.warn_usd": Key(
        float, 10.0, "flag instances whose accumulated cost passes this (USD)", lo=0
    ),
    "slurm.partition": Key(str, "", "sbatch --partition (default: the cluster's default)"),
    "slurm.time": Key(str, "", "sbatch --time limit, e.g. 2:00:00 (default: the partition's)"),
    "slurm.gpus_per_node": Key(int, 0, "GPUs per node requested as --gres=gpu:N (0 = none)", lo=0),
    "slurm.retries": Key(
        int, 3, "restarts after preemption / node failure (sbatch --requeue)", lo=0
    ),
    "slurm.hourly_usd_per_node": Key(float, 0.0, "price of one node-hour, for job costs", lo=0),
    "slurm.conf_file": Key(str, "", "SLURM_CONF on the login node (default: Slurm's own)"),
}


def home() -> Path:
    """Directory for state and caches (``RUNCTL_HOME``, default ~/.local/share/runctl)."""
    env = os.environ.get("RUNCTL_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "runctl"


def user_config_path() -> Path:
    env = os.environ.get("RUNCTL_CONFIG")
    if env:
        path = Path(env).expanduser()
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise ConfigError(
                f"RUNCTL_CONFIG names {path}, which is not a file",
                hint="point RUNCTL_CONFIG at a TOML file (e.g. .../runctl/config.toml)",
            )
        return path
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "runctl" / "config.toml"


def find_project_config(start: Path | None = None) -> Path | None:
    """Nearest ``.runctl.toml`` in ``start`` or its parents."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Config:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # key -> file it came from
    files: list[Path] = field(default_factory=list)

    def get(self, key: str) -> Any:
        if key not in SCHEMA:
            raise KeyError(key)
        return self.values.get(key, SCHEMA[key].default)


def load(explicit: Path | None = None) -> Config:
    """Merge defaults and every config file that exists; raise ConfigError on bad content."""
    cfg = Config(values={k: v.default for k, v in SCHEMA.items()})
    candidates: list[Path] = [user_config_path()]
    project = find_project_config()
    if project:
        candidates.append(project)
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(
                f"config file not found: {explicit}",
                hint="check the -c/--config path, or create it with `runctl init`",
            )
        candidates.append(explicit)
    for path in candidates:
        if path.is_file():
            for key, value in read_file(path).items():
                cfg.values[key] = value
                cfg.sources[key] = str(path)
            cfg.files.append(path)
    return cfg


def read_file(path: Path) -> dict[str, Any]:
    """Read one TOML file into flat, type-checked ``section.key`` values."""
    import tomllib  # here, not at the top: most commands run with no config file at all

    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", hint="fix the syntax") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        # Arrays nested thousands deep, integers of thousands of digits: nothing runctl reads.
        raise ConfigError(
            f"{path}: cannot parse: {type(exc).__name__}: {str(exc)[:100]}",
            hint="config values are short strings, numbers and booleans",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text: {exc.reason}", hint="save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}: top-level key {section!r} must be a [section]",
                hint=f"known keys: {', '.join(sorted(SCHEMA))}",
            )
        for name, value in body.items():
            key = f"{section}.{name}"
            flat[key] = check_value(key, value, where=str(path))
    return flat


def check_value(key: str, value: Any, where: str = "") -> Any:
    """Validate ``value`` for ``key`` (ints are accepted for floats)."""
    prefix = f"{where}: " if where else ""
    spec = SCHEMA.get(key)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(key, SCHEMA, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "run `runctl config show` for keys"
        raise ConfigError(f"{prefix}unknown config key {key!r}", hint=hint)
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**53:
            raise ConfigError(f"{prefix}{key} is out of range: {str(value)[:30]}", hint=spec.help)
        value = float(value)
    if (
        spec.type is list
        and isinstance(value, list)
        and not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{prefix}{key} must be a list of strings", hint=spec.help)
    if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
        raise ConfigError(
            f"{prefix}{key} must be {spec.type.__name__}, got {type(value).__name__}",
            hint=spec.help,
        )
    if isinstance(value, str):
        if spec.choices and value not in spec.choices:
            raise ConfigError(
                f"{prefix}{key} must be one of {', '.join(spec.choices)}, got {value[:50]!r}",
                hint=spec.help,
            )
        if any(ord(c) < 32 and c != "\t" for c in value) or len(value) > 4096:
            raise ConfigError(
                f"{prefix}{key} holds control characters or is over 4096 characters",
                hint=spec.help,
            )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(key, value, spec, prefix)
    return value


def _check_number(key: str, value: float, spec: Key, prefix: str) -> None:
    # NaN/inf would be written into job specs and compare false against every deadline.
    shown = f"{value:g}" if isinstance(value, float) else str(value)[:30]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{prefix}{key} must be a finite number, got {shown}", hint=spec.help)
    if abs(value) > 2**53:
        raise ConfigError(f"{prefix}{key} is out of range: {shown}", hint=spec.help)
    if spec.lo is not None and value < spec.lo:
        raise ConfigError(
            f"{prefix}{key} must be at least {spec.lo:g}, got {shown}", hint=spec.help
        )
    if spec.hi is not None and value > spec.hi:
        raise ConfigError(
            f"{prefix}{key} must be at most {spec.hi:g}, got {shown}", hint=spec.help
        )


def parse_value(key: str, text: str) -> Any:
    """Turn command-line text into the typed value ``key`` expects."""
    spec = SCHEMA.get(key)
    if spec is None:
        check_value(key, text)  # raises with a suggestion
        raise AssertionError  # pragma: no cover
    if spec.type is bool:
        lowered = text.strip().lower()
        if lowered in {"true", "yes", "1", "on"}:
            return True
        if lowered in {"false", "no", "0", "off"}:
            return False
        raise ConfigError(f"{key} must be true or false, got {text!r}")
    if spec.type in (int, float):
        try:
            number = spec.type(text)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {text[:50]!r}") from None
        return check_value(key, number)
    if spec.type is list:  # `config set jobs.secrets HF_TOKEN,WANDB_API_KEY`
        return check_value(key, [part.strip() for part in text.split(",") if part.strip()])
    return check_value(key, text)


def set_value(path: Path, key: str, text: str) -> Any:
    """Write one key into ``path``, keeping every other key, comment and blank line as it was.

    A key that `runctl init` wrote as a commented default (``# name = ...``) is set on the
    line after that comment, so the value stays next to its explanation.
    """
    import tomllib

    value = parse_value(key, text)
    old = ""
    before: dict[str, Any] = {}
    if path.is_file():
        read_file(path)  # refuse to rewrite a file we could not read back
        old = path.read_text()
        before = tomllib.loads(old)
    section, name = key.split(".", 1)
    new = _with_key(old, section, name, value)
    expected = {**before, section: {**before.get(section, {}), name: value}}
    if tomllib.loads(new) != expected:  # the edit must change that key and nothing else
        raise ConfigError(f"could not set {key} in {path} without changing other keys",
                          hint=f"edit {path} by hand")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if SCHEMA[key].secret or (path.is_file() and path.stat().st_mode & 0o077 == 0):
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)  # created private before the secret is written into it
    tmp.write_text(new)
    tmp.replace(path)
    return value


def _with_key(text: str, section: str, name: str, value: Any) -> str:
    """``text`` (a TOML document) with ``[section] name = value`` set, layout kept (tomlkit)."""
    import tomlkit

    doc = tomlkit.parse(text)
    table = doc.get(section)
    if isinstance(table, dict) and name in table:
        table[name] = value  # replaced in place; a comment after it on the line stays
        return doc.as_string()
    literal = f"{tomlkit.key(name).as_string()} = {tomlkit.item(value).as_string()}"
    lines = text.splitlines(keepends=True)
    current = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[]").strip()
        elif current == section and re.match(rf"#\s*{re.escape(name)}\s*=", stripped):
            ending = "" if line.endswith("\n") else "\n"
            lines.insert(i + 1, ending + literal + "\n")
            return "".join(lines)
    if table is None:
        doc[section] = tomlkit.table()
    doc[section][name] = value
    return doc.as_string()


def shown(key: str, value: Any) -> Any:
    """``value`` fit for display: secrets (API keys) are masked."""
    if SCHEMA[key].secret and value:
        return "***"
    return value


def default_file_text() -> str:
    """A commented config with every key at its default (what `runctl init` writes)."""
    lines = ["# runctl configuration; every key is optional. `runctl config show` lists them."]
    section = ""
    for key, spec in SCHEMA.items():
        sec, name = key.split(".", 1)
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        lines.append(f"# {spec.help}")
        lines.append(f"# {name} = {_toml_literal(spec.default)}")
    return "\n".join(lines) + "\n"


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return str(value)
