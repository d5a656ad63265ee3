"""The Transport seam: run a command, stream one, move bytes and trees to and from a host.

Arguments are always argv lists; a transport that goes through a remote shell quotes them with
``shlex.join`` so user input arrives literally (no injection).
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from runctl.errors import NotSupportedError
from runctl.models import Completed


class Transport(ABC):
    #: human name used in messages ("local", "ssh gpu-box")
    label: str
    #: python interpreter on the host used to run the agent
    python: str

    @abstractmethod
    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        """Run ``argv`` on the host, capturing output. TransportError if unreachable."""

    @abstractmethod
    def popen(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` on the host with stdout/stderr piped, for streaming."""

    @abstractmethod
    def send_files(self, root: Path, files: Sequence[str], remote_dir: str) -> int:
        """Copy ``files`` (relative to ``root``) into ``remote_dir``; return bytes sent."""

    @abstractmethod
    def fetch(
        self, remote_path: str, local_path: Path, *, recursive: bool, exclude: Sequence[str] = ()
    ) -> None:
        """Copy a file or directory from the host to ``local_path``, leaving out the
        top-level names in ``exclude``."""

    def copy_to(self, local: Path, remote: str, *, compress: bool, resume: bool) -> None:
        """Copy a local file or directory to ``remote`` (created if missing)."""
        raise NotSupportedError(
            f"copying paths to a host is not available over {self.label}",
            hint="stage the data through S3 (`runctl transfer ./x s3://...`)",
        )

    def copy_from(self, remote: str, local: Path, *, compress: bool, resume: bool) -> None:
        """Copy a remote file or directory to ``local``."""
        raise NotSupportedError(
            f"copying paths from a host is not available over {self.label}",
            hint="use `runctl get JOB PATH`, or stage the data through S3",
        )

    def close(self) -> None:  # noqa: B027 - optional hook; most transports hold nothing
        """Release connections (the SSH master is deliberately kept warm)."""
