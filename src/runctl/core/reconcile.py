"""Provider listings vs recorded state: orphans, vanished and drifted instances.

For every cloud provider, what it lists as runctl-made (AWS: tag ``runctl:managed=true``;
RunPod/Lyceum: the ``runctl-`` name prefix) is compared with ``Store.list_instance_records``:

* **orphan** — the provider has it, the state database does not (a ``create`` killed between
  the API call and the local record). With ``apply`` it is adopted into state with an unknown
  price (``hourly_usd`` None: never guessed) so that ``status`` and ``cleanup`` see it.
* **vanished** — state says alive, the provider says gone: closed (terminated) in state.
* **drifted** — both have it but the state differs: state updated to what the provider says.
* **known** — both agree.

A provider runctl cannot reach (no key, no credentials) is reported under ``skipped`` with
the reason; nothing about its records is changed.

On request (``runctl reconcile``, ``resources cleanup``) two more passes run: job records
against the machines' agents (``core.reconcile_jobs``: lost jobs, submits cut short) and AWS
leftovers that are not instances (``core.reconcile_aws``: volumes, spot requests, key pairs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runctl.errors import RunctlError
from runctl.models import Instance, InstanceState

if TYPE_CHECKING:
    from runctl.core.reconcile_aws import Leftover
    from runctl.core.reconcile_jobs import JobFinding
    from runctl.providers.base import Provider
    from runctl.runtime import Runtime

CLOUDS = ("aws", "runpod", "lyceum")
# Providers without machines to list whose jobs a full reconcile checks too (their agents).
HOSTS = ("ssh", "local", "slurm")
GONE = frozenset({InstanceState.TERMINATED.value, InstanceState.TERMINATING.value})
PROTECTED_TAG = "runctl:protected"


@dataclass(frozen=True)
class Finding:
    kind: str  # orphan | vanished | drifted | known
    provider: str
    instance_id: str
    name: str
    state: str  # the provider's state now ("terminated" for vanished)
    recorded_state: str | None
    hourly_usd: float | None
    protected: bool
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # provider -> why
    partial: dict[str, list[str]] = field(default_factory=dict)  # some regions unreachable
    live: list[tuple[Provider, Instance]] = field(default_factory=list)
    searched: list[Provider] = field(default_factory=list)  # the ones that answered
    jobs: list[JobFinding] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def leftovers_of(self, kind: str) -> list[Leftover]:
        return [item for item in self.leftovers if item.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "orphans": [f.to_json() for f in self.of("orphan")],
            "vanished": [f.to_json() for f in self.of("vanished")],
            "drifted": [f.to_json() for f in self.of("drifted")],
            "known": [f.to_json() for f in self.of("known")],
            "jobs": [j.to_json() for j in self.jobs],
            "volumes": [v.to_json() for v in self.leftovers_of("volume")],
            "spot_requests": [r.to_json() for r in self.leftovers_of("spot-request")],
            "key_pairs": [k.to_json() for k in self.leftovers_of("key-pair")],
            "skipped": self.skipped,
            "partial": self.partial,
        }


def is_protected(instance: Instance) -> bool:
    return instance.tags.get(PROTECTED_TAG, "").lower() in ("true", "1", "yes")


def providers_for(runtime: Runtime, name: str) -> list[Provider]:
    """One provider object per place to look: for AWS, one per region runctl recorded."""
    from runctl.providers import get_provider

    if name != "aws":
        return [get_provider(name, runtime)]
    from runctl.providers.aws.provider import AWSProvider

    regions = sorted(
        {
            str(r["data"].get("region"))
            for r in runtime.store.list_instance_records("aws")
            if r["data"].get("region")
        }
    )
    found: list[Provider] = [AWSProvider(runtime)]
    return found + [AWSProvider(runtime, region=r) for r in regions]


def listing(runtime: Runtime, platforms: Iterable[str]) -> Report:
    """What each provider lists as runctl-made, without touching state."""
    report = Report()
    seen: set[tuple[str, str]] = set()
    for name in platforms:
        errors: list[str] = []
        try:
            candidates = providers_for(runtime, name)
        except RunctlError as exc:
            report.skipped[name] = exc.message
            continue
        for provider in candidates:
            try:
                found = provider.list_instances()
            except RunctlError as exc:
                errors.append(exc.message)
                continue
            report.searched.append(provider)
            for instance in found:
                key = (instance.provider, instance.instance_id)
                if key in seen or str(instance.state) in GONE:
                    continue
                seen.add(key)
                report.live.append((provider, instance))
        if errors and len(errors) == len(candidates):
            report.skipped[name] = errors[0]
        elif errors:
            report.partial[name] = errors
    return report


def reconcile(
    runtime: Runtime,
    platforms: Iterable[str],
    *,
    apply: bool = True,
    jobs: bool = False,
    leftovers: bool = False,
) -> Report:
    """Compare listings with state; with ``apply``, adopt orphans and fix vanished/drifted.

    ``jobs`` also checks active job records against the agents (SSH to each machine with
    active jobs; with ``apply`` lost ones are marked; with every cloud wanted, jobs on SSH
    hosts, this machine and Slurm as well); ``leftovers`` also lists AWS volumes,
    spot requests and key pairs left behind (never acts on them).
    """
    wanted = list(platforms)
    report = _reconcile_instances(runtime, wanted, apply=apply)
    if jobs:
        from runctl.core.reconcile_jobs import reconcile_jobs

        reachable = [name for name in wanted if name not in report.skipped]
        if set(CLOUDS) <= set(wanted):  # no --platform filter: jobs on hosts and Slurm too
            reachable += [name for name in HOSTS if name not in wanted]
        live = {(i.provider, i.instance_id): (p, i) for p, i in report.live}
        report.jobs = reconcile_jobs(runtime, reachable, live, apply=apply)
    if leftovers and "aws" in wanted and "aws" not in report.skipped:
        from runctl.core.reconcile_aws import find_leftovers

        report.leftovers, errors = find_leftovers(report.searched, (i for _, i in report.live))
        if errors:
            report.partial.setdefault("aws", []).extend(errors)
    return report


def _reconcile_instances(runtime: Runtime, wanted: list[str], *, apply: bool) -> Report:
    """The instance pass: orphans, vanished, drifted, known."""
    from runctl.core.cloud import observe, record_gone

    report = listing(runtime, wanted)
    store = runtime.store
    live_keys = {(i.provider, i.instance_id) for _, i in report.live}
    for provider, instance in report.live:
        record = store.get_instance_record(instance.provider, instance.instance_id)
        state = str(instance.state)
        hourly = (record or {}).get("hourly_usd", instance.hourly_usd)
        kind = "orphan" if record is None else "known" if record["state"] == state else "drifted"
        report.findings.append(
            Finding(
                kind,
                instance.provider,
                instance.instance_id,
                instance.name,
                state,
                None if record is None else str(record["state"]),
                hourly,
                is_protected(instance),
                dict(instance.tags),
            )
        )
        if not apply:
            continue
        extra = dict(instance.extra)
        if instance.provider == "aws" and "storage_gb" not in ((record or {}).get("data") or {}):
            extra["storage_gb"] = _aws_storage_gb(provider, instance.instance_id)
        if record is None:
            adopted = dataclasses.replace(
                instance, hourly_usd=None, extra={**extra, "adopted_by_reconcile": True}
            )
            store.record_instance(adopted, spot=bool(instance.extra.get("spot")))
            store.add_event(
                "instance.adopted",
                f"{instance.provider}:{instance.instance_id}",
                {"name": instance.name},
            )
        else:
            observe(runtime, dataclasses.replace(instance, extra=extra))
    for name in wanted:
        if name in report.skipped:
            continue
        for record in store.list_instance_records(name):
            key = (record["provider"], record["instance_id"])
            if str(record["state"]) in GONE or key in live_keys:
                continue
            if _still_there(runtime, name, record["instance_id"]):
                continue
            report.findings.append(
                Finding(
                    "vanished",
                    name,
                    record["instance_id"],
                    record["name"],
                    "terminated",
                    str(record["state"]),
                    record.get("hourly_usd"),
                    False,
                    dict(record["tags"]),
                )
            )
            if apply:
                record_gone(runtime, name, record["instance_id"])
    return report


def _still_there(runtime: Runtime, name: str, instance_id: str) -> bool:
    """A recorded instance missing from the listing: ask for it directly before closing it."""
    from runctl.providers import get_provider

    try:
        instance = get_provider(name, runtime).get_instance(instance_id)
    except RunctlError:
        return True  # cannot tell: leave the record alone
    return instance is not None and str(instance.state) not in GONE


def _aws_storage_gb(provider: Provider, instance_id: str) -> int | None:
    """Total size of the EBS volumes attached to an instance (billed while it is stopped)."""
    from runctl.providers.aws.provider import AWSProvider
    from runctl.providers.aws.session import aws_errors

    assert isinstance(provider, AWSProvider)
    session = provider.session(instance_id)
    try:
        with aws_errors("describing volumes"):
            volumes = session.client("ec2").describe_volumes(
                Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
            )["Volumes"]
    except RunctlError:
        return None
    return sum(int(v["Size"]) for v in volumes) if volumes else None
