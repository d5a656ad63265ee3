"""Verbs shared by the cloud command groups (``runpod``, ``lyceum``): built once, per cloud.

``train`` goes through the generic job runner (``--on CLOUD:ID``), so ``runctl run --on
runpod:ID`` and ``runctl runpod train --pod-id ID`` are the same thing; ``monitor`` and
``download`` act on the jobs and files that runner put on the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import emit, is_json, json_option, progress, runtime, table, waiting
from runctl.cli.params import seconds, usd
from runctl.cli.secret_options import with_secret_options
from runctl.errors import ConflictError, NotFoundError, UsageError

if TYPE_CHECKING:
    from runctl.models import Instance
    from runctl.providers.base import Provider
    from runctl.runtime import Runtime


@dataclass(frozen=True)
class Cloud:
    name: str  # provider name: "runpod"
    noun: str  # "pod" / "VM"
    id_flag: str  # "--pod-id"

    def provider(self, rt: Runtime) -> Provider:
        from runctl.providers import get_provider

        return get_provider(self.name, rt)

    def id_option(self, fn: Any) -> Any:
        return click.option(self.id_flag, "instance_id", required=True, metavar="ID",
                            help=f"The {self.noun}'s id.")(fn)  # fmt: skip


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration_s(text: str) -> float:
    """``90``, ``45m``, ``8h``, ``1d12h``, ``2h30m`` -> seconds; UsageError otherwise."""
    match = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise UsageError(f"invalid duration {text!r}", hint="use e.g. 45m, 8h, 1d12h or seconds")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return float(d * 86400 + h * 3600 + m * 60 + s)


def instance_json(rt: Runtime, instance: Instance) -> dict[str, Any]:
    """An instance for output; ``hourly_usd`` is the launch price when runctl made it."""
    record = rt.store.get_instance_record(instance.provider, instance.instance_id)
    hourly = instance.hourly_usd
    if record is not None and record.get("hourly_usd") is not None:
        hourly = record["hourly_usd"]
    ssh = instance.ssh
    data: dict[str, Any] = {
        "id": instance.instance_id,
        "name": instance.name,
        "state": str(instance.state),
        "status": instance.extra.get("status"),
        "hourly_usd": hourly,
        "ssh": None
        if ssh is None
        else {"host": ssh.host, "port": ssh.port, "user": ssh.user, "key": ssh.identity_file},
        "spot": bool(record and record.get("spot")),
        "created_by_runctl": record is not None,
    }
    for key in ("gpu", "gpu_count", "profile", "instance_type", "expires_at"):
        value = instance.extra.get(key, (record or {}).get("data", {}).get(key))
        if value is not None:
            data[key] = value
    return data


def show_instance(data: dict[str, Any]) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "ssh" and value:
            value = f"{value['user']}@{value['host']} -p {value['port']}"
        if value not in (None, ""):
            click.echo(f"{key:>{width}}: {value}")


def get_live(rt: Runtime, cloud: Cloud, instance_id: str) -> tuple[Provider, Instance]:
    from runctl.core.cloud import observe, record_gone

    provider = cloud.provider(rt)
    instance = provider.get_instance(instance_id)
    if instance is None:
        record_gone(rt, cloud.name, instance_id)
        raise NotFoundError(f"{cloud.noun} {instance_id} not found (or terminated)",
                            hint=f"see `runctl {cloud.name} list`")  # fmt: skip
    observe(rt, instance)
    return provider, instance


def wait_ready(rt: Runtime, cloud: Cloud, provider: Provider, instance_id: str,
               timeout_s: float | None) -> Instance:  # fmt: skip
    from runctl.core.cloud import wait_until_ready

    cfg = rt.config
    with waiting(f"waiting for {cloud.noun} {instance_id} to run and take SSH"):
        return wait_until_ready(
            rt, provider, instance_id,
            timeout_s=timeout_s if timeout_s is not None
            else cfg.get(f"{cloud.name}.wait_timeout_s"),
            poll_s=cfg.get(f"{cloud.name}.poll_interval_s"),
            progress=progress,
        )  # fmt: skip


def guard_jobs(rt: Runtime, cloud: Cloud, instance_id: str, force: bool, verb: str) -> None:
    """Refuse to ``verb`` a machine that still runs runctl jobs, unless ``force``."""
    from runctl.core.jobs import refresh

    jobs = rt.store.list_jobs(provider=cloud.name, instance_id=instance_id)
    active = [j for j in jobs if not j.state.is_final and j.state.value != "lost"]
    if active and not force:
        active, _ = refresh(rt, active)
        active = [j for j in active if not j.state.is_final and j.state.value != "lost"]
    if active and not force:
        ids = ", ".join(j.job_id for j in active)
        raise ConflictError(
            f"{cloud.noun} {instance_id} still runs job(s) {ids}",
            hint=f"wait for them or cancel them first, or pass --force to {verb} anyway",
        )


# ---------------------------------------------------------------------------- commands


_EXAMPLE_IDS = {"runpod": "abc123xyz", "lyceum": "vm-42"}


def examples(cloud: Cloud, *lines: str) -> str:
    """An "Examples:" block for a help text; {flag} and {id} name this cloud's machine."""
    fill = {"flag": cloud.id_flag, "id": _EXAMPLE_IDS.get(cloud.name, "ID")}
    body = "".join(f"\n  runctl {cloud.name} {line.format(**fill)}" for line in lines)
    return f"\n\n\b\nExamples:{body}"


def status_command(cloud: Cloud) -> click.Command:
    @click.command(name="status")
    @cloud.id_option
    @click.option("--wait", "wait_", is_flag=True, help="Wait until it runs and takes SSH.")
    @click.option("--timeout", type=seconds(), metavar="SECONDS",
                  help="How long --wait waits.")  # fmt: skip
    @json_option
    def cmd(instance_id: str, wait_: bool, timeout: float | None) -> None:
        rt = runtime()
        provider, instance = get_live(rt, cloud, instance_id)
        if wait_:
            instance = wait_ready(rt, cloud, provider, instance_id, timeout)
        data = instance_json(rt, instance)
        emit(data, lambda: show_instance(data))

    cmd.help = f"Show one {cloud.noun}: state, SSH endpoint, price; --wait until it is usable."
    cmd.help += examples(cloud, "status {flag} {id}", "status {flag} {id} --wait")
    return cmd


def list_command(cloud: Cloud) -> click.Command:
    @click.command(name="list")
    @click.option("--all", "show_all", is_flag=True,
                  help="Include machines not created by runctl (no runctl- name).")  # fmt: skip
    @json_option
    def cmd(show_all: bool) -> None:
        from runctl.core.cloud import observe

        rt = runtime()
        provider = cloud.provider(rt)
        found = provider.list_instances(include_foreign=show_all)  # type: ignore[call-arg]
        for instance in found:
            observe(rt, instance)
        rows = [instance_json(rt, i) for i in found]

        def text() -> None:
            if not rows:
                click.echo(f"no {cloud.noun}s: create one with `runctl {cloud.name} create`")
                return
            table(["id", "name", "status", "gpu", "$/h", "ssh"], [
                (r["id"], r["name"], r["status"], r.get("gpu") or r.get("profile"),
                 "" if r["hourly_usd"] is None else f"{r['hourly_usd']:.2f}",
                 "" if not r["ssh"] else f"{r['ssh']['host']}:{r['ssh']['port']}")
                for r in rows
            ])  # fmt: skip

        emit(rows, text)

    cmd.help = f"List {cloud.noun}s named runctl-... (the ones runctl made)."
    cmd.help += examples(cloud, "list", "list --all --json")
    return cmd


def terminate_command(cloud: Cloud) -> click.Command:
    @click.command(name="terminate")
    @cloud.id_option
    @click.option("--force", is_flag=True, help="Even if runctl jobs still run on it.")
    @json_option
    def cmd(instance_id: str, force: bool) -> None:
        from runctl.core.cloud import record_gone

        rt = runtime()
        guard_jobs(rt, cloud, instance_id, force, "terminate")
        cloud.provider(rt).terminate_instance(instance_id)  # type: ignore[attr-defined]
        record_gone(rt, cloud.name, instance_id)
        emit({"id": instance_id, "terminated": True}, f"terminated {instance_id}")

    cmd.help = f"Terminate a {cloud.noun}; its disks are deleted. Idempotent."
    cmd.help += examples(cloud, "terminate {flag} {id}", "terminate {flag} {id} --force")
    return cmd


# Same convention as `runctl run`: options anywhere before `--`, script arguments after it.
_RUN_CONTEXT: dict[str, Any] = {}


def budget_option(fn: Any) -> Any:
    """``--budget USD`` for a train command, recorded like ``runctl run --budget``."""
    return click.option(
        "--budget",
        "budget",
        type=usd(),
        metavar="USD",
        help="Cost limit of this job; `runctl resources enforce` acts on it per "
        "costs.budget_action.",
    )(fn)


def train_command(cloud: Cloud) -> click.Command:
    @click.command(name="train", context_settings=_RUN_CONTEXT)
    @cloud.id_option
    @click.option("--name", help="Job name (default: the script's name).")
    @click.option("--project", help="Project name (default: the project root's name).")
    @click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Extra environment.")
    @with_secret_options
    @click.option(
        "--include",
        "includes",
        multiple=True,
        metavar="PATTERN",
        help="Sync this ignored path too (gitignore syntax; repeatable).",
    )
    @click.option(
        "--exclusive", is_flag=True, help="Refuse if this project already runs a job there."
    )
    @click.option("--no-resume", is_flag=True, help="Do not resume from the latest checkpoint.")
    @click.option("--checkpoint-dir", metavar="DIR", help="Checkpoint directory on the host.")
    @click.option(
        "--install-deps/--no-install-deps",
        default=None,
        help="Install requirements.txt on the host (default: yes).",
    )
    @click.option("-f", "--follow", is_flag=True, help="Stream the log until the job ends.")
    @click.option("--wait", "wait_", is_flag=True, help="Wait for the job; exit with its code.")
    @budget_option
    @json_option
    @click.argument("script")
    @click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
    def cmd(instance_id: str, script: str, script_args: tuple[str, ...], follow: bool,
            wait_: bool, **opts: Any) -> None:  # fmt: skip
        from runctl.cli import jobs as jobs_cli

        job = jobs_cli._submit([script, *jobs_cli._split_args(script_args)], "script",
                               f"{cloud.name}:{instance_id}", opts)  # fmt: skip
        if follow:
            jobs_cli._finish(jobs_cli._follow_to_end(job, cancel_on_interrupt=False))
            return
        if wait_:
            from runctl.core.jobs import wait

            job, _ = wait(runtime(), job, progress)
            jobs_cli._finish(job)
            if not is_json():
                click.echo(job.job_id)
            return
        emit(jobs_cli.job_json(job), lambda: click.echo(job.job_id))
        if not is_json():
            progress(f"monitor with: runctl {cloud.name} monitor {cloud.id_flag} {instance_id}")

    cmd.help = (
        f"Sync the project to a {cloud.noun} and run SCRIPT there as a detached job "
        f"(same as `runctl run --on {cloud.name}:ID`); arguments after SCRIPT go to it."
    ) + examples(
        cloud, "train {flag} {id} train.py -- --epochs 3", "train -f {flag} {id} train.py"
    )
    return cmd


def _job_on(rt: Runtime, cloud: Cloud, instance_id: str, job_ref: str | None) -> Any:
    if job_ref:
        job = rt.store.get_job(job_ref)
        if (job.provider, job.instance_id) != (cloud.name, instance_id):
            raise UsageError(f"job {job.job_id} ran on {job.provider}:{job.instance_id}, "
                             f"not on {cloud.name}:{instance_id}")  # fmt: skip
        return job
    found = rt.store.list_jobs(provider=cloud.name, instance_id=instance_id, limit=1)
    if not found:
        raise NotFoundError(f"no runctl job on {cloud.noun} {instance_id}",
                            hint=f"start one with `runctl {cloud.name} train "
                            f"{cloud.id_flag} {instance_id} SCRIPT`")  # fmt: skip
    return found[0]


def monitor_command(cloud: Cloud) -> click.Command:
    @click.command(name="monitor")
    @cloud.id_option
    @click.option("--job", "job_ref", metavar="JOB", help="Which job (default: the latest).")
    @click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
    @click.option("-n", "--tail", "tail", type=click.IntRange(min=1), default=50,
                  show_default=True, help="Start with the last N lines.")  # fmt: skip
    @json_option
    def cmd(instance_id: str, job_ref: str | None, follow: bool, tail: int) -> None:
        from runctl.cli.jobs import show_log

        show_log(_job_on(runtime(), cloud, instance_id, job_ref), follow=follow, last_lines=tail)

    cmd.help = f"Show the log of the latest (or --job) runctl job on a {cloud.noun}; -f follows."
    cmd.help += examples(cloud, "monitor {flag} {id}", "monitor {flag} {id} -f")
    return cmd


def download_command(cloud: Cloud) -> click.Command:
    @click.command(name="download")
    @cloud.id_option
    @click.option("--remote", "remote", required=True, metavar="PATH",
                  help="File or directory on the machine (relative: to the login home, "
                  "or to the job directory with --job).")  # fmt: skip
    @click.option(
        "--local",
        "local",
        type=click.Path(path_type=Path),
        metavar="DEST",
        help="Where to put it (default: its name in the current directory).",
    )
    @click.option("--job", "job_ref", metavar="JOB", help="PATH is inside this job's directory.")
    @click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
    @json_option
    def cmd(instance_id: str, remote: str, local: Path | None, job_ref: str | None,
            force: bool) -> None:  # fmt: skip
        from pathlib import PurePosixPath

        from runctl.core import jobs as core

        rt = runtime()
        with waiting(f"downloading {remote} from {cloud.noun} {instance_id}"):
            if job_ref:
                job = _job_on(rt, cloud, instance_id, job_ref)
                rel = core.check_relative(remote)
                dest = local if local is not None else Path(PurePosixPath(rel).name or "download")
                written = core.fetch(rt, job, rel, dest, overwrite=force)
            else:
                written = _download_path(rt, cloud, instance_id, remote, local, force)
        emit({"id": instance_id, "remote": remote, "dest": str(written)}, str(written))

    cmd.help = f"Copy a file or directory from a {cloud.noun} to this machine (over SSH)."
    cmd.help += examples(
        cloud, "download {flag} {id} --remote outputs/model.pt",
        "download {flag} {id} --job train-3f9a2c --remote outputs --local ./outputs",
    )  # fmt: skip
    return cmd


def _download_path(rt: Runtime, cloud: Cloud, instance_id: str, remote: str,
                   local: Path | None, force: bool) -> Path:  # fmt: skip
    from pathlib import PurePosixPath

    if not remote or "\0" in remote:
        raise UsageError("empty or invalid --remote path")
    if remote.startswith("-"):
        remote = f"./{remote}"  # never an option to the remote cat/tar
    provider, instance = get_live(rt, cloud, instance_id)
    transport = provider.connect(instance)
    probe = transport.run(["sh", "-c", 'test -e "$1" || exit 3; test -d "$1"', "sh", remote])
    if probe.returncode == 3:
        raise NotFoundError(f"{remote} does not exist on {cloud.noun} {instance_id}")
    is_dir = probe.returncode == 0
    dest = local if local is not None else Path(PurePosixPath(remote).name or "download")
    if dest.exists() and dest.is_dir():
        dest = dest / PurePosixPath(remote).name
    if dest.exists() and not force and not is_dir:
        raise ConflictError(f"{dest} already exists", hint="pass --force to overwrite it")
    transport.fetch(remote, dest, recursive=is_dir)
    return dest
