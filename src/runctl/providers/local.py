"""The local provider: this machine. The embedded default; jobs run in the project in place."""

from __future__ import annotations

from typing import ClassVar

from runctl.models import Instance
from runctl.providers.base import Provider
from runctl.runtime import Runtime
from runctl.transport.base import Transport
from runctl.transport.local import LocalTransport

LOCAL_ID = "local"


class LocalProvider(Provider):
    name = "local"
    unsupported: ClassVar[dict[str, str]] = {
        "stop": "the local machine is yours; runctl never stops it",
        "create": "the local machine always exists",
    }

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def check(self) -> None:
        return None

    def _instance(self) -> Instance:
        return Instance(
            provider="local",
            instance_id=LOCAL_ID,
            name="local",
            remote_dir=str(self.runtime.home / "local"),
            hourly_usd=0.0,
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        return self._instance() if instance_id == LOCAL_ID else None

    def list_instances(self) -> list[Instance]:
        return [self._instance()]

    def connect(self, instance: Instance) -> Transport:
        python = self.runtime.config.get("local.python") or None
        return LocalTransport(python)
