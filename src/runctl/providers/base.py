"""The Provider interface: what a place to run offers. Synchronous; polling lives in core.

Capabilities a provider lacks are absent (no mixin); the CLI explains why from the class's
``unsupported`` reasons instead of calling a stub.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from runctl.models import Completed, Instance
from runctl.transport.base import Transport


class Provider(ABC):
    name: ClassVar[str]
    #: capability -> why this provider cannot do it (shown by the CLI)
    unsupported: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def check(self) -> None:
        """Raise AuthError/ConfigError (with a hint) if the provider is unusable."""

    @abstractmethod
    def get_instance(self, instance_id: str) -> Instance | None:
        """The instance, or None when it is gone / unknown."""

    @abstractmethod
    def list_instances(self) -> list[Instance]:
        """Everything this provider knows runctl made or registered."""

    @abstractmethod
    def connect(self, instance: Instance) -> Transport:
        """A transport to act on ``instance``."""


class SupportsStop(ABC):
    @abstractmethod
    def stop_instance(self, instance_id: str) -> None: ...

    @abstractmethod
    def start_instance(self, instance_id: str) -> Instance: ...


#: runs an agent sub-command on the host (installing the agent first if needed)
AgentCall = Callable[[Sequence[str], bytes | None], Completed]


class SupportsBatchStart(ABC):
    """Providers whose jobs go through a batch scheduler (Slurm) instead of `agent start`."""

    @abstractmethod
    def start_job(
        self,
        instance: Instance,
        transport: Transport,
        args: Sequence[str],
        payload: bytes,
        call: AgentCall,
    ) -> Completed:
        """Start the job whose spec is ``payload``; answer like ``agent start`` does."""
