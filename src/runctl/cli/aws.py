"""``runctl aws``: EC2 instances for training — create, train, monitor, processes, lifecycle.

Verbs and aliases follow the original runctl (``create``/new/spawn, ``train``/run,
``monitor``/watch/logs, ``stop``/pause, ``start``/resume, ``terminate``/destroy/rm/delete).
Jobs started by ``aws train`` are ordinary runctl jobs: ``runctl logs/wait/cancel/get`` work on
them, and ``runctl run --on aws:i-...`` is the same path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.aws_options import make_provider, region_option, transport_option
from runctl.cli.output import emit, is_json, json_option, progress, runtime, waiting
from runctl.cli.params import seconds, usd
from runctl.errors import ConflictError, RunctlError, UsageError

if TYPE_CHECKING:
    from runctl.models import Instance
    from runctl.providers.aws.provider import AWSProvider

_ALIASES = {
    "new": "create", "spawn": "create", "run": "train", "watch": "monitor", "logs": "monitor",
    "pause": "stop", "resume": "start", "destroy": "terminate", "rm": "terminate",
    "delete": "terminate",
}  # fmt: skip


class AliasGroup(click.Group):
    """A group that also answers to each command's aliases (shown in its help line)."""

    def __init__(self, *args: Any, aliases: dict[str, str], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.aliases = aliases

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.commands[name]
            extra = [a for a, n in self.aliases.items() if n == name]
            help_text = cmd.get_short_help_str(70)
            rows.append((name + (f" ({', '.join(extra)})" if extra else ""), help_text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _instance_json(instance: Instance, **extra: Any) -> dict[str, Any]:
    data = {
        "instance_id": instance.instance_id,
        "name": instance.name,
        "state": str(instance.state),
        "hourly_usd": instance.hourly_usd,
        **{k: v for k, v in instance.extra.items() if k != "raw_state"},
        "ssh": (
            {"host": instance.ssh.host, "port": instance.ssh.port, "user": instance.ssh.user}
            if instance.ssh
            else None
        ),
        "tags": instance.tags,
    }
    data.update(extra)
    return data


@click.group(cls=AliasGroup, aliases=_ALIASES)
def aws() -> None:
    """EC2 instances for training: create, train, monitor, stop, terminate, EBS volumes.

    \b
    Examples:
      runctl aws create g5.xlarge --spot --wait
      runctl aws train i-0abc123 train.py -- --epochs 3
      runctl aws terminate i-0abc123
    """


def _register() -> None:
    """Add the commands kept in sibling modules (imported with this one: click needs them)."""
    from runctl.cli.aws_ebs import ebs
    from runctl.cli.aws_train import aws_monitor, aws_processes, aws_train

    for command in (aws_train, aws_monitor, aws_processes, ebs):
        aws.add_command(command)


# ------------------------------------------------------------------------------ create


@aws.command(name="create")
@click.argument("instance_type", required=False)
@click.option("--instance-type", "instance_type_opt", hidden=True,
              help="Old spelling of INSTANCE_TYPE.")  # fmt: skip
@click.option("--output", "output_fmt", hidden=True,
              type=click.Choice(["instance-id", "json", "table", "text"], case_sensitive=False),
              help="Old spelling: instance-id = --quiet, json = --json.")  # fmt: skip
@click.option("--spot", is_flag=True, help="Request a one-time spot instance.")
@click.option(
    "--spot-max-price",
    type=usd(),
    metavar="USD",
    help="Highest spot price per hour (default: the on-demand price).",
)
@click.option(
    "--no-fallback",
    is_flag=True,
    help="Fail instead of falling back to on-demand when spot is unavailable.",
)
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Accept the on-demand fallback without asking (needed when not a TTY).",
)
@click.option("--key-name", help="Existing EC2 key pair (default: import runctl's key).")
@click.option("--security-group", help="Security group id or name (default: runctl-ssh).")
@click.option("--ami-id", help="AMI (default: Deep Learning AMI for GPU types, else AL2023).")
@click.option(
    "--root-volume-size",
    type=click.IntRange(8, 16384),
    metavar="GB",
    help="Root volume size (default 30, 100 for GPU types; at least the AMI's).",
)
@click.option(
    "--data-volume-size",
    type=click.IntRange(1, 65536),
    metavar="GB",
    help="Extra gp3 data volume, mounted at /mnt/data; kept after terminate.",
)
@click.option("--project-name", help="Project tag (default: defaults.project, the CWD name).")
@click.option("--iam-instance-profile", help="Instance profile (enables the SSM transport).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the instance is running.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the instance id on stdout.")
@region_option
@json_option
def aws_create(instance_type: str, spot: bool, spot_max_price: float | None, no_fallback: bool,
               yes: bool, key_name: str | None, security_group: str | None, ami_id: str | None,
               root_volume_size: int | None, data_volume_size: int | None,
               project_name: str | None, iam_instance_profile: str | None, wait_: bool,
               quiet: bool, region: str | None, instance_type_opt: str | None = None,
               output_fmt: str | None = None) -> None:  # fmt: skip
    """Create an EC2 instance of INSTANCE_TYPE (e.g. g5.xlarge), tagged and recorded.

    \b
    Examples:
      runctl aws create g5.xlarge --spot --wait
      runctl aws create t3.medium --root-volume-size 100 --project-name mnist
    """
    from runctl.cli.seed_compat import legacy_output
    from runctl.providers.aws.launch import CreateOptions, create_instance

    instance_type = _instance_type(instance_type, instance_type_opt)
    quiet = legacy_output(output_fmt, "instance-id", "--quiet") or quiet

    if iam_instance_profile is not None and not iam_instance_profile.strip():
        raise UsageError("empty --iam-instance-profile")
    provider = make_provider(region)
    interactive = not is_json() and sys.stdin.isatty() and sys.stderr.isatty()
    confirm: Callable[[str], bool] | None = (
        (lambda q: click.confirm(q, err=True)) if interactive else None
    )
    opts = CreateOptions(
        instance_type=instance_type, spot=spot, spot_max_price=spot_max_price,
        no_fallback=no_fallback, yes=yes, key_name=key_name, security_group=security_group,
        ami_id=ami_id, root_volume_gb=root_volume_size, data_volume_gb=data_volume_size,
        project=project_name, iam_instance_profile=iam_instance_profile,
    )  # fmt: skip
    created = create_instance(provider, opts, progress, confirm)
    instance = created.instance
    if wait_:
        with waiting(f"waiting for {instance.instance_id} to run"):
            instance = provider.wait_state(instance.instance_id, {"running"},
                                           on_poll=lambda s: progress(f"  {s} ..."))  # fmt: skip
        created.instance = instance
    data = created.to_json()
    data["state"] = str(instance.state)

    def text() -> None:
        if quiet:
            click.echo(instance.instance_id)
            return
        market = "spot" if created.spot else "on-demand"
        price = f" at ${created.hourly_usd:.4f}/h" if created.hourly_usd is not None else ""
        click.echo(f"Created {market} instance: {instance.instance_id}{price}")
        click.echo(f"  {instance.name}  {instance_type}  {instance.state}  "
                   f"{instance.extra.get('public_ip') or 'no public ip'}")  # fmt: skip
        click.echo(f"next: runctl aws train {instance.instance_id} SCRIPT -- ARGS")

    emit(data, text)


def _instance_type(positional: str | None, option: str | None) -> str:
    """INSTANCE_TYPE, or the old ``--instance-type TYPE`` spelling of it."""
    if option is not None:
        from runctl.cli.seed_compat import note

        if positional is not None:
            raise UsageError("give the instance type once", hint="runctl aws create g5.xlarge")
        note(f"--instance-type {option}", f"runctl aws create {option}")
        return option
    if positional is None:
        raise UsageError("missing INSTANCE_TYPE", hint="e.g. `runctl aws create g5.xlarge`")
    return positional


# --------------------------------------------------------------------------- lifecycle


def _host_jobs(provider: AWSProvider, instance: Instance) -> tuple[list[str], str | None]:
    """Ids of jobs running on the host, per its agent; (ids, why unknown)."""
    from runctl.core import agent

    try:
        transport = provider.connect(instance)
        status = agent.call_json(instance, transport, ["status", "--base", instance.remote_dir],
                                 timeout=60)  # fmt: skip
    except RunctlError as exc:
        return [], exc.message
    live = {"running", "setup", "starting"}
    return sorted(j for j, s in status.items() if s.get("state") in live), None


def guard_jobs(provider: AWSProvider, instance: Instance, force: bool, grace: float | None,
               verb: str) -> list[str]:  # fmt: skip
    """Refuse ``verb`` while jobs run (unless force); with force SIGTERM them, grace, KILL.

    ``grace`` None: each job's own (``run --grace``), else ``jobs.grace_s``."""
    from runctl.core import agent
    from runctl.core.jobs import grace_of, refresh
    from runctl.models import InstanceState

    if instance.state != InstanceState.RUNNING:
        return []
    rt = runtime()
    ids, unknown = _host_jobs(provider, instance)
    if unknown is not None:
        recorded = [j.job_id for j in rt.store.list_jobs(provider="aws",
                    instance_id=instance.instance_id) if not j.state.is_final]  # fmt: skip
        progress(f"warning: cannot ask {instance.instance_id} about running jobs ({unknown})")
        ids = recorded
    if not ids:
        return []
    iid = instance.instance_id
    if not force:
        raise ConflictError(
            f"refusing to {verb} {iid}: job(s) running: {', '.join(ids)}",
            hint=f"wait for them (`runctl wait JOB`), cancel them, or pass --force to SIGTERM "
            f"them and {verb}",
        )
    if unknown is None:
        transport = provider.connect(instance)
        records = {j.job_id: j for j in rt.store.list_jobs(provider="aws", instance_id=iid)}
        for job_id in ids:
            record = records.get(job_id)
            wait_s = grace_of(rt, record, grace) if record is not None else grace
            if wait_s is None:
                wait_s = float(rt.config.get("jobs.grace_s"))
            progress(f"stopping job {job_id}: SIGTERM, {wait_s:g}s grace ...")
            job_dir = f"{instance.remote_dir}/jobs/{job_id}"
            agent.call_json(instance, transport,
                            ["cancel", "--job-dir", job_dir, "--grace", str(wait_s)],
                            timeout=wait_s + 60)  # fmt: skip
        known = [j for j in rt.store.list_jobs(provider="aws", instance_id=iid) if j.job_id in ids]
        refresh(rt, known)
    return ids


@aws.command(name="stop")
@click.argument("instance_id")
@click.option("--force", is_flag=True, help="Stop even if jobs run (they get SIGTERM first).")
@click.option(
    "--grace",
    type=seconds(),
    metavar="SECONDS",
    help="SIGTERM-to-SIGKILL grace for running jobs (default: each job's --grace, else "
    "jobs.grace_s).",
)
@click.option("--wait", "wait_", is_flag=True, help="Wait until the instance is stopped.")
@transport_option
@region_option
@json_option
def aws_stop(instance_id: str, force: bool, grace: float | None, wait_: bool,
             transport: str | None, region: str | None) -> None:  # fmt: skip
    """Stop INSTANCE_ID (disks kept, compute billing stops). Refuses while jobs run.

    \b
    Examples:
      runctl aws stop i-0abc123
      runctl aws stop i-0abc123 --force --wait
    """
    from runctl.models import InstanceState

    provider = make_provider(region, transport)
    instance = provider.require_instance(instance_id)
    if instance.state in (InstanceState.STOPPED, InstanceState.STOPPING):
        emit(_instance_json(instance), f"{instance_id} already {instance.state}")
        return
    if instance.state != InstanceState.RUNNING:
        raise ConflictError(f"{instance_id} is {instance.state}; only running instances stop")
    stopped_jobs = guard_jobs(provider, instance, force, grace, "stop")
    provider.stop_instance(instance_id)
    if wait_:
        with waiting(f"waiting for {instance_id} to stop"):
            instance = provider.wait_state(instance_id, {"stopped"})
    else:
        instance = provider.require_instance(instance_id)
    emit(
        _instance_json(instance, stopped_jobs=stopped_jobs),
        f"{instance_id} {instance.state}; restart with `runctl aws start {instance_id}`",
    )


@aws.command(name="start")
@click.argument("instance_id")
@click.option("--wait", "wait_", is_flag=True, help="Wait until it runs; print its IP.")
@region_option
@json_option
def aws_start(instance_id: str, wait_: bool, region: str | None) -> None:
    """Start a stopped INSTANCE_ID.

    \b
    Examples:
      runctl aws start i-0abc123 --wait
    """
    from runctl.models import InstanceState

    provider = make_provider(region)
    instance = provider.require_instance(instance_id)
    if instance.state == InstanceState.RUNNING:
        emit(_instance_json(instance), f"{instance_id} already running "
             f"({instance.extra.get('public_ip') or 'no public ip'})")  # fmt: skip
        return
    if instance.state != InstanceState.STOPPED:
        raise ConflictError(f"{instance_id} is {instance.state}; only stopped instances start",
                            hint=f"see `runctl aws status {instance_id}`")  # fmt: skip
    instance = provider.start_instance(instance_id)
    if wait_:
        with waiting(f"waiting for {instance_id} to run"):
            instance = provider.wait_state(instance_id, {"running"})
    emit(_instance_json(instance), f"{instance_id} {instance.state} "
         f"({instance.extra.get('public_ip') or 'no public ip yet'})")  # fmt: skip


@aws.command(name="terminate")
@click.argument("instance_id")
@click.option("--force", is_flag=True, help="Terminate even if jobs run (they get SIGTERM first).")
@click.option(
    "--grace",
    type=seconds(),
    metavar="SECONDS",
    help="SIGTERM-to-SIGKILL grace for running jobs (default: each job's --grace, else "
    "jobs.grace_s).",
)
@click.option("--no-wait", is_flag=True, help="Return without waiting for 'terminated'.")
@transport_option
@region_option
@json_option
def aws_terminate(instance_id: str, force: bool, grace: float | None, no_wait: bool,
                  transport: str | None, region: str | None) -> None:  # fmt: skip
    """Terminate INSTANCE_ID and wait until it is gone. Refuses while jobs run.

    \b
    Examples:
      runctl aws terminate i-0abc123
      runctl aws terminate i-0abc123 --force
    """
    from runctl.models import InstanceState

    provider = make_provider(region, transport)
    raw = provider.describe(instance_id)
    instance = provider.to_instance(raw, provider.session(instance_id).region)
    if instance.state == InstanceState.TERMINATED:
        emit(_instance_json(instance), f"{instance_id} already terminated")
        return
    root = raw.get("RootDeviceName")
    kept = [
        m["Ebs"]["VolumeId"]
        for m in raw.get("BlockDeviceMappings", [])
        if m.get("DeviceName") != root and not m.get("Ebs", {}).get("DeleteOnTermination")
    ]
    stopped_jobs = guard_jobs(provider, instance, force, grace, "terminate")
    provider.terminate_instance(instance_id)
    if not no_wait:
        with waiting(f"waiting for {instance_id} to terminate"):
            instance = provider.wait_state(instance_id, {"terminated"},
                                           on_poll=lambda s: progress(f"  {s} ..."))  # fmt: skip
    else:
        instance = provider.require_instance(instance_id)
    if kept:
        progress(f"note: volume(s) {', '.join(kept)} survive termination; see "
                 "`runctl aws ebs list`")  # fmt: skip
    emit(
        _instance_json(instance, stopped_jobs=stopped_jobs, kept_volumes=kept),
        f"{instance_id} {instance.state}",
    )


@aws.command(name="status")
@click.argument("instance_id")
@transport_option
@region_option
@json_option
def aws_status(instance_id: str, transport: str | None, region: str | None) -> None:
    """State, addresses, price, transport and jobs of INSTANCE_ID.

    \b
    Examples:
      runctl aws status i-0abc123
      runctl aws status i-0abc123 --json
    """
    from runctl.cli.jobs import job_json
    from runctl.core.jobs import refresh
    from runctl.models import InstanceState

    rt = runtime()
    provider = make_provider(region, transport)
    instance = provider.require_instance(instance_id)
    provider.record(provider.describe(instance_id), provider.session(instance_id).region)
    jobs = rt.store.list_jobs(provider="aws", instance_id=instance_id, limit=10)
    errors: dict[str, str] = {}
    if instance.state == InstanceState.RUNNING and jobs:
        jobs, errors = refresh(rt, jobs)
    try:
        how = provider.transport_mode(instance)
    except RunctlError as exc:
        how = f"none ({exc.message})"
    data = _instance_json(instance, transport=how,
                          ssm_available=bool(instance.extra.get("iam_instance_profile")),
                          jobs=[job_json(j) for j in jobs], unreachable=errors)  # fmt: skip

    def text() -> None:
        extra = instance.extra
        rows = [
            ("instance", instance_id), ("name", instance.name), ("state", instance.state),
            ("type", extra.get("instance_type")), ("region", extra.get("region")),
            ("market", "spot" if extra.get("spot") else "on-demand"),
            ("price", f"${instance.hourly_usd:.4f}/h" if instance.hourly_usd else None),
            ("public ip", extra.get("public_ip")), ("private ip", extra.get("private_ip")),
            ("transport", how), ("project", instance.tags.get("runctl:project")),
            ("last job", instance.tags.get("runctl:job")),
        ]  # fmt: skip
        for key, value in rows:
            if value not in (None, ""):
                click.echo(f"{key:>10}: {value}")
        for job in jobs[:5]:
            click.echo(f"{'':>12}{job.job_id}  {job.state}")

    emit(data, text)


@aws.command(name="wait")
@click.argument("instance_id")
@click.option(
    "--timeout",
    type=seconds(1),
    metavar="SECONDS",
    help="Give up after this long (default aws.wait_timeout_s).",
)
@region_option
@json_option
def aws_wait(instance_id: str, timeout: float | None, region: str | None) -> None:
    """Wait until INSTANCE_ID is running.

    \b
    Examples:
      runctl aws wait i-0abc123 --timeout 600
    """
    provider = make_provider(region)
    provider.describe(instance_id)
    with waiting(f"waiting for {instance_id} to run"):
        instance = provider.wait_state(instance_id, {"running"}, timeout,
                                       on_poll=lambda s: progress(f"  {s} ..."))  # fmt: skip
    emit(_instance_json(instance), f"{instance_id} running "
         f"({instance.extra.get('public_ip') or 'no public ip'})")  # fmt: skip


_register()
