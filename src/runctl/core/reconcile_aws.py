"""AWS leftovers that are not instances: detached volumes, open spot requests, key pairs.

runctl tags what it makes ``runctl:managed=true``; the volumes and spot requests of a
``create`` also carry that launch's ``runctl:launch`` token. After a killed ``create`` or a
terminate that left things behind:

* **volume** — managed, ``available`` (attached to nothing), made with an instance (it has a
  launch token) of which no instance is alive any more. It bills per GB-month. ``resources
  cleanup`` deletes it after the user's yes, never one tagged ``runctl:protected`` or
  ``runctl:persistent``. Volumes made with ``aws ebs create`` carry no launch token: they are
  the user's own and never leftovers.
* **spot request** — managed, still ``open``/``active``, with no live instance: an open one
  can still start (and bill) a machine later. ``resources cleanup`` cancels it.
* **key pair** — imported by runctl (``runctl-<hash>``): free, so kept; listed so that
  nothing runctl made is invisible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from runctl.errors import RunctlError

if TYPE_CHECKING:
    from runctl.models import Instance
    from runctl.providers.base import Provider
    from runctl.runtime import Runtime


@dataclass(frozen=True)
class Leftover:
    kind: str  # volume | spot-request | key-pair
    region: str
    resource_id: str
    name: str
    state: str
    size_gb: int | None
    created_at: str | None
    protected: bool
    action: str  # what cleanup does: delete | cancel | keep

    @property
    def key(self) -> str:
        return f"aws:{self.resource_id}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_leftovers(
    providers: Iterable[Provider], live: Iterable[Instance]
) -> tuple[list[Leftover], list[str]]:
    """Leftovers in the regions of ``providers`` (AWS ones), given every live instance.

    Returns them and, per region that could not be listed, why.
    """
    from runctl.providers.aws import ebs, ec2
    from runctl.providers.aws.provider import AWSProvider
    from runctl.providers.aws.session import AwsSession

    alive = [i for i in live if i.provider == "aws"]
    live_ids = {i.instance_id for i in alive}
    tokens = {i.tags.get(ec2.LAUNCH) for i in alive} - {None, ""}
    sessions: dict[str, AwsSession] = {}
    for provider in providers:
        if isinstance(provider, AWSProvider):
            session = provider.session()
            sessions.setdefault(session.region, session)
    found: list[Leftover] = []
    errors: list[str] = []
    for region, session in sorted(sessions.items()):
        try:
            volumes = ebs.list_volumes(session)
            requests = ec2.list_spot_requests(session)
            pairs = ec2.list_key_pairs(session)
        except RunctlError as exc:
            errors.append(f"{region}: {exc.message}")
            continue
        for raw in volumes:
            tags = ec2.tags_of(raw)
            token = tags.get(ec2.LAUNCH)
            if raw.get("State") != "available" or not token or token in tokens:
                continue
            found.append(_leftover("volume", region, raw["VolumeId"], raw, "delete",
                                   size_gb=raw.get("Size")))  # fmt: skip
        for raw in requests:
            if raw.get("InstanceId") in live_ids:
                continue
            found.append(_leftover("spot-request", region, raw["SpotInstanceRequestId"], raw,
                                   "cancel", state=raw.get("State")))  # fmt: skip
        for raw in pairs:
            found.append(_leftover("key-pair", region, raw["KeyName"], raw, "keep",
                                   state="imported"))  # fmt: skip
    return found, errors


def _leftover(
    kind: str,
    region: str,
    resource_id: str,
    raw: dict[str, Any],
    action: str,
    *,
    size_gb: int | None = None,
    state: str | None = None,
) -> Leftover:
    from runctl.providers.aws import ec2

    tags = ec2.tags_of(raw)
    protected = any(tags.get(t, "").lower() == "true" for t in (ec2.PROTECTED, ec2.PERSISTENT))
    created = raw.get("CreateTime")
    return Leftover(
        kind=kind,
        region=region,
        resource_id=resource_id,
        name=tags.get("Name", ""),
        state=str(state or raw.get("State", "")),
        size_gb=size_gb,
        created_at=None if created is None else str(created),
        protected=protected,
        action="keep" if protected else action,
    )


def remove(runtime: Runtime, leftover: Leftover) -> str:
    """Delete the volume or cancel the spot request: "deleted", "cancelled" or "skipped: why".

    Idempotent: one already gone counts as done. Refuses protected ones (ebs.delete checks the
    tags again, in case they changed since the listing).
    """
    from runctl.errors import NotFoundError
    from runctl.providers.aws import ebs, spot
    from runctl.providers.aws.provider import AWSProvider

    if leftover.action not in ("delete", "cancel"):
        return f"skipped: {leftover.kind}s are kept"
    session = AWSProvider(runtime, region=leftover.region).session()
    try:
        if leftover.kind == "volume":
            ebs.delete(session, leftover.resource_id)
            done = "deleted"
        else:
            spot.cancel(session, leftover.resource_id)
            done = "cancelled"
    except NotFoundError:
        done = "deleted" if leftover.kind == "volume" else "cancelled"
    except RunctlError as exc:
        return f"skipped: {exc.message}"
    runtime.store.add_event(f"aws.{leftover.kind}.{done}", leftover.key,
                            {"region": leftover.region, "by": "cleanup"})  # fmt: skip
    return done
