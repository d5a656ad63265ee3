"""``runctl aws train|monitor|processes``: work on an instance (registered in cli/aws.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.aws_options import make_provider, region_option, transport_option
from runctl.cli.cloud import budget_option
from runctl.cli.output import emit, is_json, json_option, progress, runtime, table
from runctl.cli.params import seconds
from runctl.cli.secret_options import resolve_secrets, with_secret_options
from runctl.errors import ConflictError, NotFoundError, RunctlError, TransportError

if TYPE_CHECKING:
    from runctl.models import Instance, Job
    from runctl.providers.aws.provider import AWSProvider


# ------------------------------------------------------------------------------- train


def _check_trainable(provider: AWSProvider, instance: Instance) -> Instance:
    from runctl.models import InstanceState

    iid = instance.instance_id
    if instance.state in (InstanceState.STOPPED, InstanceState.STOPPING):
        raise ConflictError(f"{iid} is {instance.state}",
                            hint=f"start it: runctl aws start {iid} --wait")  # fmt: skip
    if instance.state in (InstanceState.TERMINATED, InstanceState.TERMINATING):
        raise NotFoundError(f"{iid} is {instance.state}",
                            hint="create a new one with `runctl aws create TYPE`")  # fmt: skip
    if instance.state == InstanceState.PENDING:
        progress(f"{iid} is pending; waiting until it runs ...")
        instance = provider.wait_state(iid, {"running"})
    return instance


def _wait_reachable(provider: AWSProvider, instance: Instance, timeout_s: float) -> None:
    """Retry the first command while a fresh instance's sshd/SSM agent comes up.

    Only instances launched in the last 15 minutes are waited for; an older one that does
    not answer has a real problem (security group, key), reported at once.
    """
    from datetime import UTC, datetime

    try:
        launched = datetime.fromisoformat(str(instance.extra.get("launch_time")))
        young = (datetime.now(UTC) - launched).total_seconds() < 900
    except (TypeError, ValueError):
        young = False
    deadline = time.monotonic() + (timeout_s if young else 0)
    transport = provider.connect(instance)
    while True:
        try:
            transport.run(["true"], timeout=30)
            return
        except TransportError as exc:
            from runctl.core.jobs import check_auth

            check_auth(exc)  # a refused key or host key: waiting longer cannot fix it
            if time.monotonic() >= deadline:
                raise
            progress(f"{instance.instance_id} not reachable yet ({exc.message}); retrying ...")
            time.sleep(5)


def s3_commands(
    host_cli: str, data_s3: str | None, output_s3: str | None, endpoint: str, region: str
) -> tuple[list[list[str]], list[list[str]]]:
    """Agent pre/post steps: sync DATA into $RUNCTL_DATA_DIR, $RUNCTL_OUTPUT_DIR to OUTPUT."""
    from runctl.core.hoststeps import cli_flags, s3_sync_down, s3_sync_up
    from runctl.storage.s3 import parse_uri

    flags = cli_flags(region, endpoint)
    pre, post = [], []
    if data_s3:
        pre.append(s3_sync_down(host_cli, str(parse_uri(data_s3)), "RUNCTL_DATA_DIR", flags))
    if output_s3:
        post.append(s3_sync_up(host_cli, str(parse_uri(output_s3)), "RUNCTL_OUTPUT_DIR", flags))
    return pre, post


@click.command(name="train")
@click.argument("instance_id")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--sync-code/--no-sync-code",
    default=True,
    show_default=True,
    help="Sync the project to the instance first.",
)
@click.option(
    "--include",
    "--include-pattern",
    "includes",
    multiple=True,
    metavar="PATTERN",
    help="Sync this ignored path too (gitignore syntax; repeatable).",
)
@click.option(
    "--data-s3",
    metavar="S3_URI",
    help="Sync this S3 prefix into $RUNCTL_DATA_DIR on the host before the script.",
)
@click.option(
    "--output-s3",
    metavar="S3_URI",
    help="Upload $RUNCTL_OUTPUT_DIR to this S3 prefix after the script exits.",
)
@click.option("--project-name", help="Project name (default: the project root's name).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Extra environment.")
@with_secret_options
@click.option("-f", "--follow", is_flag=True, help="Stream the log until the job ends.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job; exit with its code.")
@click.option(
    "--timeout",
    type=seconds(),
    default=120,
    show_default=True,
    metavar="MINUTES",
    help="With --wait: stop waiting after this long (0 = never).",
)
@click.option(
    "--docker",
    "docker",
    is_flag=True,
    help="Run in a container: the project's image, built here and pushed to ECR.",
)
@click.option("--docker-image", metavar="IMAGE", help="Run in a container of IMAGE (ECR or any "
              "registry the instance can pull from).")  # fmt: skip
@click.option("--allow-concurrent", is_flag=True,
              help="Start even if another job runs on the instance (else refused).")  # fmt: skip
@budget_option
@transport_option
@region_option
@json_option
def aws_train(instance_id: str, script: str, script_args: tuple[str, ...], sync_code: bool,
              includes: tuple[str, ...], data_s3: str | None, output_s3: str | None,
              project_name: str | None, env: tuple[str, ...], follow: bool, wait_: bool,
              timeout: float, budget: float | None, transport: str | None, region: str | None,
              allow_concurrent: bool, **docker_opts: Any) -> None:  # fmt: skip
    """Run SCRIPT on INSTANCE_ID as a runctl job; script arguments go after --.

    \b
    Examples:
      runctl aws train i-0abc123 train.py -- --epochs 3
      runctl aws train -f --output-s3 s3://my-bucket/runs i-0abc123 train.py
    """
    from runctl.cli.jobs import _parse_env, job_json
    from runctl.core import jobs as core
    from runctl.core.targets import Target
    from runctl.core.watchdog import guard, job_policy
    from runctl.providers.aws import ec2

    secrets, env_file = resolve_secrets(docker_opts.pop("secrets"), docker_opts.pop("env_file"))
    provider = make_provider(region, transport)
    instance = _check_trainable(provider, provider.require_instance(instance_id))
    session = provider.session(instance_id)
    cfg = runtime().config
    pre, post = s3_commands(cfg.get("aws.host_cli"), data_s3, output_s3,
                            cfg.get("aws.endpoint_url"), session.region)  # fmt: skip
    _wait_reachable(provider, instance, float(cfg.get("aws.wait_timeout_s")))
    request = core.SubmitRequest(
        argv=[script, *script_args], project=project_name, env=_parse_env(env),
        secrets=secrets, env_file=env_file,
        includes=includes, sync=sync_code, pre_commands=pre, post_commands=post,
        budget_usd=budget, exclusive_machine=not allow_concurrent,
    )  # fmt: skip
    if docker_opts.get("docker") or docker_opts.get("docker_image"):
        from runctl.cli.docker import docker_request, ecr_login_command

        repository = _ecr_repository(script, project_name)
        request.docker = docker_request(docker_opts, is_local=False, region=session.region,
                                        repository=repository, argv=request.argv,
                                        includes=includes) or {}  # fmt: skip
        login = ecr_login_command(request.docker["image"], cfg.get("aws.host_cli"),
                                  cfg.get("aws.endpoint_url"))  # fmt: skip
        request.pre_commands = [*login, *request.pre_commands]
    target = Target(provider, instance)
    result = core.submit(runtime(), target, request, progress)
    job = result.job
    try:  # spot notices, and a --budget the instance enforces itself
        guard(runtime(), target, job_policy(runtime(), target, None, budget), progress)
    except RunctlError as exc:
        progress(f"warning: could not arm the instance's watchdog: {exc.message}")
    try:
        ec2.set_tags(session, [instance_id], {ec2.JOB: job.job_id})
    except RunctlError as exc:
        progress(f"warning: could not tag {instance_id} with the job id: {exc.message}")
    progress(f"started {job.job_id} on aws:{instance_id} in {result.seconds:.2f}s")
    if follow or wait_:
        _run_to_end(job, follow=follow, timeout_s=timeout * 60 or None)
        return
    emit(job_json(job, method=provider.transport_mode(instance),
                  monitor_command=f"runctl aws monitor {instance_id} --follow"),
         lambda: click.echo(job.job_id))  # fmt: skip
    if not is_json():
        progress(f"follow with: runctl aws monitor {instance_id} -f  (or runctl logs "
                 f"{job.job_id} -f)")  # fmt: skip


def _ecr_repository(script: str, project_name: str | None) -> str:
    """ECR repository for `train --docker`: the project's name, as for `runctl run`."""
    from pathlib import Path

    from runctl.core.jobs import slug
    from runctl.core.sync_select import find_project_root

    return slug(project_name or find_project_root(Path(script)).name, "project").lower()


def _run_to_end(job: Job, *, follow: bool, timeout_s: float | None) -> None:
    from runctl.cli.jobs import TIMEOUT_EXIT, _finish, _follow_to_end, job_json
    from runctl.core import jobs as core
    from runctl.errors import CommandFailedError

    if follow:
        _finish(_follow_to_end(job, cancel_on_interrupt=False))
        return
    if not is_json():
        click.echo(job.job_id)
    job, _ = core.wait(runtime(), job, progress, timeout_s=timeout_s)
    if not job.state.is_final and str(job.state) != "lost":
        emit(job_json(job, timed_out=True))
        raise CommandFailedError(
            f"{job.job_id} still {job.state} after {timeout_s or 0:g}s",
            exit_code=TIMEOUT_EXIT,
            hint=f"the job keeps running; wait again with `runctl wait {job.job_id}`",
        )
    _finish(job)


# ----------------------------------------------------------------------------- monitor


def _latest_job(instance_id: str) -> Job:
    jobs = runtime().store.list_jobs(provider="aws", instance_id=instance_id, limit=1)
    if not jobs:
        raise NotFoundError(
            f"no runctl job recorded for {instance_id} on this machine",
            hint=f"start one with `runctl aws train {instance_id} SCRIPT`",
        )
    return jobs[0]


@click.command(name="monitor")
@click.argument("instance_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Start with the last N lines.",
)
@json_option
def aws_monitor(instance_id: str, follow: bool, lines: int) -> None:
    """Show the log of the latest job on INSTANCE_ID (--follow to stream it).

    \b
    Examples:
      runctl aws monitor i-0abc123
      runctl aws monitor i-0abc123 -f
    """
    from runctl.cli.jobs import show_log
    from runctl.providers.aws.provider import check_instance_id

    job = _latest_job(check_instance_id(instance_id))
    show_log(job, follow=follow, last_lines=lines, log_key="output", instance_id=instance_id,
             log_path=f"{job.job_dir}/log")  # fmt: skip


# --------------------------------------------------------------------------- processes


def _render_processes(snap: dict[str, Any], detailed: bool) -> None:
    mem = snap["memory"]
    load = " ".join("-" if v is None else f"{v:g}" for v in snap["load"])
    cpu = snap["cpu_percent"]
    click.echo(f"CPU {cpu if cpu is not None else '?'}%   load {load}   memory "
               f"{mem['used_mb']}/{mem['total_mb']} MB ({mem['percent']}%)")  # fmt: skip
    click.echo("")
    table(["filesystem", "size gb", "used gb", "use%", "mount"],
          [(d["filesystem"], d["size_gb"], d["used_gb"], d["percent"], d["mount"])
           for d in snap["disks"]])  # fmt: skip
    click.echo("")
    width = 80 if detailed else 40
    count = 20 if detailed else 10
    table(["pid", "user", "cpu%", "mem%", "rss mb", "command"],
          [(p["pid"], p["user"], p["cpu_percent"], p["mem_percent"], p["rss_mb"],
            p["command"][:width]) for p in snap["processes"][:count]])  # fmt: skip
    click.echo("")
    if not snap["gpus"]:
        click.echo(snap["gpu_status"])
        return

    def fmt(value: Any, unit: str = "") -> str:
        return "N/A" if value is None else f"{value:g}{unit}"

    table(
        ["gpu", "name", "util", "memory", "temp", "power"],
        [
            (
                g["index"],
                g["name"],
                fmt(g["util_percent"], "%"),
                f"{fmt(g['memory_used_mib'])}/{fmt(g['memory_total_mib'])} MiB",
                fmt(g["temperature_c"], "C"),
                f"{fmt(g['power_w'])}/{fmt(g['power_limit_w'])} W",
            )
            for g in snap["gpus"]
        ],
    )


@click.command(name="processes")
@click.argument("instance_id")
@click.option("-d", "--detailed", is_flag=True, help="Wider process table, more rows.")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C (JSON: one per line).")
@click.option(
    "--interval",
    type=seconds(0.5),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Refresh interval with --watch.",
)
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after N updates.")
@transport_option
@region_option
@json_option
def aws_processes(instance_id: str, detailed: bool, watch: bool, interval: float,
                  count: int | None, transport: str | None,
                  region: str | None) -> None:  # fmt: skip
    """CPU, memory, disks, top processes and GPUs (nvidia-smi) of INSTANCE_ID.

    \b
    Examples:
      runctl aws processes i-0abc123
      runctl aws processes i-0abc123 -w --interval 5
    """
    import json

    from runctl.core import telemetry
    from runctl.state.db import now_iso

    provider = make_provider(region, transport)
    instance = provider.require_instance(instance_id)
    conn = provider.connect(instance)
    shown = 0
    while True:
        done = conn.run(["sh", "-c", telemetry.PROBE], timeout=60)
        if done.returncode != 0 and not done.stdout:
            raise TransportError(
                f"telemetry probe failed on {instance_id}: "
                f"{done.stderr.decode(errors='replace').strip()[-200:]}"
            )
        snap = {"instance_id": instance_id, "timestamp": now_iso(),
                **telemetry.parse(done.text)}  # fmt: skip
        if watch and is_json():
            click.echo(json.dumps(snap))
        elif watch:
            click.clear()
            click.echo(f"{instance_id}  {snap['timestamp']}")
            _render_processes(snap, detailed)
        else:
            emit(snap, lambda snap=snap: _render_processes(snap, detailed))  # type: ignore[misc]
        shown += 1
        if not watch or (count is not None and shown >= count):
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
