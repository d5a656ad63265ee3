"""Options and the provider factory shared by the `aws` command modules.

Kept apart from cli/aws.py so aws_train.py and aws_ebs.py can import them without importing
the group (which registers those modules' commands, and would make the import circular).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import progress, runtime

if TYPE_CHECKING:
    from runctl.providers.aws.provider import AWSProvider


def region_option(fn: Any) -> Any:
    return click.option(
        "--region", help="AWS region (default: the instance's recorded region, aws.region, "
        "then the AWS chain)."
    )(fn)  # fmt: skip


def transport_option(fn: Any) -> Any:
    return click.option(
        "--transport", type=click.Choice(["auto", "ssh", "ssm"]),
        help="How to reach the instance (default aws.transport: ssh if possible, else ssm).",
    )(fn)  # fmt: skip


def make_provider(region: str | None, transport: str | None = None) -> AWSProvider:
    from runctl.providers.aws.provider import AWSProvider

    return AWSProvider(runtime(), region=region, transport=transport, notify=progress)
