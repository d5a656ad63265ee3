"""Commands the agent runs on the host around a job: S3 syncs through the host's AWS CLI.

Each is an argv for ``sh -c`` with the URI and flags as positional parameters, so they arrive
literally and are never re-parsed by a shell. The host needs the AWS CLI (``aws.host_cli``) and
credentials of its own (an instance profile on EC2).
"""

from __future__ import annotations

from collections.abc import Sequence


def cli_flags(region: str = "", endpoint: str = "") -> list[str]:
    flags = ["--region", region] if region else []
    return flags + (["--endpoint-url", endpoint] if endpoint else [])


def s3_sync_down(host_cli: str, uri: str, env_dir: str, flags: Sequence[str]) -> list[str]:
    """Sync ``uri`` into the directory named by environment variable ``env_dir``."""
    script = f'mkdir -p "${env_dir}" && exec "$0" s3 sync --no-progress "$@" "${env_dir}"'
    return ["sh", "-c", script, host_cli, *flags, uri]


def s3_sync_up(host_cli: str, uri: str, env_dir: str, flags: Sequence[str]) -> list[str]:
    """Sync the directory named by environment variable ``env_dir`` up to ``uri``."""
    script = f'u=$1; shift; exec "$0" s3 sync --no-progress "$@" "${env_dir}" "$u"'
    return ["sh", "-c", script, host_cli, uri, *flags]
