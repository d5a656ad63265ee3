"""Local transport: the "host" is this machine, commands are plain subprocesses."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from runctl.errors import TransportError, from_os_error
from runctl.models import Completed
from runctl.transport.base import Transport


class LocalTransport(Transport):
    label = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        try:
            proc = subprocess.run(
                list(argv), input=input, capture_output=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise TransportError(f"command not found: {argv[0]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"local command timed out after {timeout}s: {argv[0]}") from exc
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send_files(self, root: Path, files: Sequence[str], remote_dir: str) -> int:
        dest = Path(os.path.expanduser(remote_dir))
        sent = 0
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, target)
            sent += target.stat().st_size
        return sent

    def fetch(
        self, remote_path: str, local_path: Path, *, recursive: bool, exclude: Sequence[str] = ()
    ) -> None:
        """Copy out of a job dir the way tar does for SSH jobs: links stay links (a job's
        link to /etc/passwd or ~/.ssh copies no outside content, ``../..`` does not
        recurse), and pipes, sockets and devices are skipped instead of read."""
        source = Path(os.path.expanduser(remote_path))
        try:
            if recursive:
                top = os.path.realpath(source)

                def ignore(directory: str, names: list[str]) -> set[str]:
                    skip = _special_files(directory, names)
                    if os.path.realpath(directory) == top:
                        skip.update(n for n in names if n in exclude)
                    return skip

                shutil.copytree(source, local_path, symlinks=True, ignore=ignore,
                                dirs_exist_ok=True)  # fmt: skip
            else:
                local_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, local_path, follow_symlinks=False)
        except OSError as exc:
            # A full disk, an unwritable or looping destination: the filesystem's failure
            # (exit 11 / 5), named as such.
            typed = from_os_error(exc, f"copying {source} to {local_path}")
            if typed is not None:
                raise typed from exc
            raise TransportError(f"copying {source} to {local_path} failed: {exc}") from exc
        except shutil.Error as exc:
            raise TransportError(f"copying {source} to {local_path} failed: {exc}") from exc

    def copy_to(self, local: Path, remote: str, *, compress: bool, resume: bool) -> None:
        # Same machine: compression buys nothing; resume = skip files already identical.
        _copy(local, Path(os.path.expanduser(remote)), resume)

    def copy_from(self, remote: str, local: Path, *, compress: bool, resume: bool) -> None:
        _copy(Path(os.path.expanduser(remote)), local, resume)


def _copy(src: Path, dst: Path, skip_same: bool) -> None:
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            if path.is_file():
                _copy(path, dst / path.relative_to(src), skip_same)
        return
    if skip_same and dst.is_file():
        a, b = src.stat(), dst.stat()
        if a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime):
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _special_files(directory: str, names: list[str]) -> set[str]:
    """Entries of ``directory`` that are neither files, dirs nor links (opening a FIFO
    would block the copy forever)."""
    skip = set()
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skip.add(name)
    return skip
