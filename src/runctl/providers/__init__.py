"""Providers: the places a job can run. ``REGISTRY`` maps a name to "module:Class" (lazy)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.providers.base import Provider
    from runctl.runtime import Runtime

REGISTRY: dict[str, str] = {
    "local": "runctl.providers.local:LocalProvider",
    "ssh": "runctl.providers.ssh:SSHProvider",
    "runpod": "runctl.providers.runpod.provider:RunpodProvider",
    "lyceum": "runctl.providers.lyceum.provider:LyceumProvider",
    "aws": "runctl.providers.aws.provider:AWSProvider",
    "slurm": "runctl.providers.slurm:SlurmProvider",
}


def get_provider(name: str, runtime: Runtime) -> Provider:
    """Instantiate provider ``name``; UsageError with the known names if there is none."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise UsageError(
            f"unknown provider {name!r}", hint=f"known providers: {', '.join(sorted(REGISTRY))}"
        )
    module_name, cls_name = spec.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    provider: Provider = cls(runtime)
    return provider
