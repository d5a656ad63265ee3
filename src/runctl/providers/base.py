"""The Provider interface: what a place to run offers. Synchronous; polling lives in core.

Capabilities a provider lacks are absent (no mixin); the CLI explains why from the class's
``unsupported`` reasons instead of calling a stub.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

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


class SupportsWatchdog(ABC):
    """Providers whose machines can stop or delete themselves when a watchdog policy fires.

    The on-host watchdog (agent ``watchdog``) carries out a *recipe*: ``{"argv": [...]}`` run
    on the host, or ``{"http": {"method", "url", "body"?, "token", "auth_header",
    "auth_prefix"}}`` sent from the host to the provider's API. An http recipe's ``token`` is
    shipped as a 0600 file on the host and never stored in the watchdog config.
    """

    @abstractmethod
    def default_watchdog_action(self, instance: Instance) -> str:
        """The action ("stop" | "terminate") used when the user names none."""

    @abstractmethod
    def watchdog_recipe(self, instance: Instance, action: str) -> dict[str, Any]:
        """How ``instance`` does ``action`` ("stop" | "terminate") by itself.

        May prepare the instance for it (AWS: the shutdown behaviour). Raises
        NotSupportedError, with the reason, when the action is impossible.
        """

    @abstractmethod
    def spot_notice_url(self, instance: Instance) -> str | None:
        """Base URL of an IMDSv2-style metadata service announcing interruptions, or None."""
