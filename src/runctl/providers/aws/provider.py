"""The AWS provider: EC2 instances runctl creates, reached over SSH or SSM.

``get_instance`` turns an EC2 instance into runctl's ``Instance``; ``connect`` picks the
transport (``--transport`` / ``aws.transport``: ``auto`` = SSH when the instance has an
address and a key runctl can use, else SSM when it has an instance profile) and says which.

**SSH endpoint override.** The SSH address is normally the public IP. The tag
``runctl:ssh-endpoint = HOST[:PORT]`` on an instance replaces it — for a bastion-forwarded or
NAT'd port, a private address over VPN, or a test stand on 127.0.0.1. The login user is
``aws.ssh_user``, else the ``runctl:ssh-user`` tag written at create (from the AMI), else
``ec2-user``; the key is ``aws.ssh_key_file``, else runctl's own key (``RUNCTL_HOME/keys``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from runctl.errors import NotFoundError, NotSupportedError, TransportError, UsageError
from runctl.models import Instance, SSHTarget
from runctl.providers.aws import ec2
from runctl.providers.aws.session import AwsSession, aws_errors, make_session, resolve_region
from runctl.providers.base import Provider, SupportsStop, SupportsWatchdog
from runctl.runtime import Runtime
from runctl.transport.base import Transport

_ID_RE = re.compile(r"^i-[0-9a-zA-Z]{8,17}$")
_ENDPOINT_RE = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?$")
TRANSPORTS = ("auto", "ssh", "ssm")
SHUTDOWN_COMMAND = "sudo -n shutdown -h now"


def check_instance_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise UsageError(
            f"invalid instance id {value!r}", hint="EC2 instance ids look like i-0123456789abcdef0"
        )
    return value


def parse_endpoint(text: str) -> tuple[str, int | None]:
    match = _ENDPOINT_RE.match(text.strip())
    if not match:
        raise UsageError(f"invalid ssh endpoint {text!r}", hint="use HOST or HOST:PORT")
    port = int(match["port"]) if match["port"] else None
    return match["host"].strip("[]"), port


class AWSProvider(Provider, SupportsStop, SupportsWatchdog):
    name = "aws"
    unsupported: ClassVar[dict[str, str]] = {}
    #: instances whose transport was already announced in this process (once, not per call)
    _announced: ClassVar[set[str]] = set()

    def __init__(
        self,
        runtime: Runtime,
        region: str | None = None,
        transport: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.region = region
        self.transport = transport
        self._notify = notify or _stderr
        self._sessions: dict[str, AwsSession] = {}

    # ---------------------------------------------------------------- sessions

    def session(self, instance_id: str | None = None) -> AwsSession:
        """The session for an explicit --region, else the instance's recorded region."""
        recorded = None
        if instance_id and not self.region:
            record = self.runtime.store.get_instance_record("aws", instance_id)
            recorded = (record or {}).get("data", {}).get("region")
        region = resolve_region(self.runtime.config, self.region, recorded)
        if region not in self._sessions:
            self._sessions[region] = make_session(self.runtime.config, region)
        return self._sessions[region]

    def check(self) -> None:
        with aws_errors("checking AWS credentials"):
            self.session().client("sts").get_caller_identity()

    # --------------------------------------------------------------- instances

    def describe(self, instance_id: str) -> dict[str, Any]:
        """The raw EC2 instance; NotFoundError when it does not exist."""
        return ec2.require(self.session(check_instance_id(instance_id)), instance_id)

    def get_instance(self, instance_id: str) -> Instance | None:
        session = self.session(check_instance_id(instance_id))
        raw = ec2.describe(session, instance_id)
        return None if raw is None else self.to_instance(raw, session.region)

    def list_instances(self) -> list[Instance]:
        session = self.session()
        return [self.to_instance(raw, session.region) for raw in ec2.list_managed(session)]

    def to_instance(self, raw: dict[str, Any], region: str) -> Instance:
        tags = ec2.tags_of(raw)
        instance_id = str(raw["InstanceId"])
        record = self.runtime.store.get_instance_record("aws", instance_id) or {}
        profile = raw.get("IamInstanceProfile", {}).get("Arn", "")
        extra: dict[str, Any] = {
            "region": region,
            "instance_type": raw.get("InstanceType"),
            "public_ip": raw.get("PublicIpAddress"),
            "private_ip": raw.get("PrivateIpAddress"),
            "availability_zone": raw.get("Placement", {}).get("AvailabilityZone"),
            "spot": raw.get("InstanceLifecycle") == "spot",
            "iam_instance_profile": profile.rsplit("/", 1)[-1] if profile else None,
            "key_name": raw.get("KeyName"),
            "image_id": raw.get("ImageId"),
            "launch_time": str(raw.get("LaunchTime", "")),
            "raw_state": raw["State"]["Name"],
        }
        return Instance(
            provider="aws",
            instance_id=instance_id,
            name=tags.get("Name", instance_id),
            state=ec2.map_state(raw["State"]["Name"]),
            ssh=self._ssh_target(raw, tags),
            remote_dir=str(self.runtime.config.get("aws.remote_dir")),
            hourly_usd=record.get("hourly_usd"),
            tags=tags,
            extra=extra,
        )

    def _ssh_target(self, raw: dict[str, Any], tags: dict[str, str]) -> SSHTarget | None:
        override = tags.get(ec2.SSH_ENDPOINT)
        if override:
            host, port = parse_endpoint(override)
        elif raw.get("PublicIpAddress"):
            host, port = str(raw["PublicIpAddress"]), None
        else:
            return None
        user = self.login_user(tags)
        known = self.runtime.home / "known_hosts"
        return SSHTarget(
            host=host,
            user=user,
            port=port,
            identity_file=str(self.identity_file(raw.get("KeyName"))),
            options=(
                "StrictHostKeyChecking=accept-new",
                f"UserKnownHostsFile={known}",
                # EC2 reuses public IPs: key the host by instance id, not by address.
                f"HostKeyAlias={raw['InstanceId']}",
            ),
        )

    def login_user(self, tags: dict[str, str]) -> str:
        """aws.ssh_user, else the user recorded from the AMI at create, else ec2-user."""
        return str(self.runtime.config.get("aws.ssh_user") or tags.get(ec2.SSH_USER) or "ec2-user")

    def identity_file(self, key_name: str | None = None) -> Path:
        """The private key for an instance: aws.ssh_key_file, ~/.ssh/KEYNAME(.pem), ours."""
        configured = self.runtime.config.get("aws.ssh_key_file")
        if configured:
            return Path(os.path.expanduser(configured))
        if key_name and not key_name.startswith("runctl-"):
            for candidate in (f"~/.ssh/{key_name}.pem", f"~/.ssh/{key_name}"):
                path = Path(os.path.expanduser(candidate))
                if path.is_file():
                    return path
        from runctl.providers.sshkeys import private_key_path

        return private_key_path(self.runtime.home, "")

    def ensure_local_key(self) -> Path:
        """The private key runctl imports as a key pair (runctl's own, made 0600 on first use)."""
        from runctl.providers.sshkeys import ensure_keypair

        key, _public = ensure_keypair(
            self.runtime.home, self.runtime.config.get("aws.ssh_key_file")
        )
        return key

    # --------------------------------------------------------------- transport

    def transport_mode(self, instance: Instance) -> str:
        """ "ssh" or "ssm" for ``instance`` (explicit choice, else auto); raises if neither."""
        mode = self.transport or str(self.runtime.config.get("aws.transport"))
        if mode not in TRANSPORTS:
            raise UsageError(f"unknown transport {mode!r}", hint="use auto, ssh or ssm")
        has_ssh = instance.ssh is not None and Path(instance.ssh.identity_file or "").is_file()
        has_ssm = bool(instance.extra.get("iam_instance_profile"))
        if mode == "auto":
            mode = "ssh" if has_ssh else "ssm" if has_ssm else ""
        if mode == "ssh" and instance.ssh is None:
            raise TransportError(
                f"{instance.instance_id} has no public IP for SSH",
                hint="use --transport ssm (needs an instance profile), or set the tag "
                f"{ec2.SSH_ENDPOINT}=HOST:PORT",
            )
        if mode == "ssm" and not has_ssm:
            raise TransportError(
                f"{instance.instance_id} has no instance profile, so SSM cannot reach it",
                hint="use --transport ssh, or create instances with --iam-instance-profile "
                "(AmazonSSMManagedInstanceCore)",
            )
        if not mode:
            raise TransportError(
                f"cannot reach {instance.instance_id}: no SSH key for it and no instance profile",
                hint=f"set aws.ssh_key_file to the key of {instance.extra.get('key_name')}, or "
                "create instances with --iam-instance-profile for SSM",
            )
        return mode

    def connect(self, instance: Instance) -> Transport:
        mode = self.transport_mode(instance)
        if mode == "ssm":
            from runctl.transport.ssm import SSMTransport

            transport: Transport = SSMTransport(
                self.session(instance.instance_id),
                instance.instance_id,
                bucket=str(self.runtime.config.get("aws.s3_bucket")),
                user=self.login_user(instance.tags),
                python=instance.python,
            )
            where = "SSM Run Command"
        else:
            from runctl.transport.ssh import SSHTransport

            assert instance.ssh is not None
            cfg = self.runtime.config
            transport = SSHTransport(
                instance.ssh,
                home=self.runtime.home,
                connect_timeout_s=cfg.get("ssh.connect_timeout_s"),
                control_persist_s=cfg.get("ssh.control_persist_s"),
                python=instance.python,
                sync_method=cfg.get("ssh.sync_method"),
            )
            port = f":{instance.ssh.port}" if instance.ssh.port else ""
            where = f"ssh {instance.ssh.destination}{port}"
        if instance.instance_id not in self._announced:
            self._announced.add(instance.instance_id)
            self._notify(f"{instance.instance_id}: using {where} (override with --transport)")
        return transport

    # ---------------------------------------------------------------- lifecycle

    def record(
        self, raw: dict[str, Any], region: str, hourly_usd: float | None = None
    ) -> Instance:
        """Store the instance's current state (the basis of cost accounting)."""
        instance = self.to_instance(raw, region)
        if hourly_usd is not None:
            import dataclasses

            instance = dataclasses.replace(instance, hourly_usd=hourly_usd)
        self.runtime.store.record_instance(instance, spot=bool(instance.extra.get("spot")))
        return instance

    def stop_instance(self, instance_id: str) -> None:
        session = self.session(check_instance_id(instance_id))
        ec2.stop(session, instance_id)
        self.record(ec2.require(session, instance_id), session.region)

    def start_instance(self, instance_id: str) -> Instance:
        session = self.session(check_instance_id(instance_id))
        ec2.start(session, instance_id)
        return self.record(ec2.require(session, instance_id), session.region)

    def terminate_instance(self, instance_id: str) -> None:
        """Terminate; idempotent. Does not wait (see ``wait_state``)."""
        session = self.session(check_instance_id(instance_id))
        ec2.terminate(session, instance_id)
        raw = ec2.describe(session, instance_id)
        if raw is not None:
            self.record(raw, session.region)

    def wait_state(
        self,
        instance_id: str,
        wanted: set[str],
        timeout_s: float | None = None,
        on_poll: Callable[[str], None] | None = None,
    ) -> Instance:
        session = self.session(instance_id)
        timeout = (
            timeout_s if timeout_s is not None else self.runtime.config.get("aws.wait_timeout_s")
        )
        raw = ec2.wait_for(session, instance_id, wanted, float(timeout), on_poll=on_poll)
        return self.record(raw, session.region)

    # ---------------------------------------------------------------- watchdog

    def default_watchdog_action(self, instance: Instance) -> str:
        return "terminate" if instance.extra.get("spot") else "stop"

    def watchdog_recipe(self, instance: Instance, action: str) -> dict[str, Any]:
        """A shutdown from inside (watchdog.shutdown_command), after setting the instance's
        shutdown behaviour to ``action`` so that shutdown stops or terminates it."""
        if action == "stop" and instance.extra.get("spot"):
            raise NotSupportedError(
                f"{instance.instance_id} is a one-time spot instance, which cannot be stopped",
                hint="use --watchdog-action terminate",
            )
        session = self.session(instance.instance_id)
        ec2.set_shutdown_behavior(session, instance.instance_id, action)
        command = str(self.runtime.config.get("watchdog.shutdown_command")) or SHUTDOWN_COMMAND
        return {"argv": shlex.split(command)}

    def spot_notice_url(self, instance: Instance) -> str | None:
        """The instance metadata service (aws.imds_url) for spot instances."""
        return str(self.runtime.config.get("aws.imds_url")) if instance.extra.get("spot") else None

    def require_instance(self, instance_id: str) -> Instance:
        instance = self.get_instance(instance_id)
        if instance is None:
            raise NotFoundError(
                f"instance {instance_id} not found",
                hint="check the id and --region; see `runctl aws status ID`",
            )
        return instance


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
