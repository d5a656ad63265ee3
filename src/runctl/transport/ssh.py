"""SSH transport on the system OpenSSH client.

Using ``ssh`` itself (not a Python SSH library) means ~/.ssh/config aliases, agents, jump hosts
and certificates work exactly as they do for the user. One ControlMaster socket per host is kept
warm (``ControlPersist``) so every later command is a cheap multiplexed round trip; trees move
with rsync over the same connection, or tar when rsync is missing.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runctl.errors import TransportError
from runctl.models import Completed, SSHTarget
from runctl.transport.base import Transport

UNREACHABLE = 255  # ssh's own exit code for connection failures


def control_dir(home: Path) -> Path:
    """A directory for ControlMaster sockets whose path is short enough for AF_UNIX."""
    # sun_path is 108 bytes; ssh adds "/<40 hex %C>.<16 random>" while creating the socket.
    candidate = home / "cm"
    if len(str(candidate)) > 45:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
        candidate = Path("/tmp") / f"runctl-{os.getuid()}-{digest}"
    candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
    return candidate


class SSHTransport(Transport):
    def __init__(
        self,
        target: SSHTarget,
        *,
        home: Path,
        config_file: str = "",
        connect_timeout_s: int = 10,
        control_persist_s: int = 600,
        python: str = "python3",
        sync_method: str = "auto",
    ) -> None:
        self.target = target
        self.label = f"ssh {target.destination}"
        self.python = python
        self.sync_method = sync_method
        opts = [
            "-o", "BatchMode=yes",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={control_dir(home)}/%C",
            "-o", f"ControlPersist={control_persist_s}",
            # Detect a dead network in ~6 s instead of hanging on a half-open TCP connection.
            "-o", "ServerAliveInterval=2",
            "-o", "ServerAliveCountMax=3",
            "-o", f"ConnectTimeout={connect_timeout_s}",
        ]  # fmt: skip
        if config_file:
            opts = ["-F", os.path.expanduser(config_file), *opts]
        if target.port:
            opts += ["-p", str(target.port)]
        if target.identity_file:
            opts += ["-i", os.path.expanduser(target.identity_file), "-o", "IdentitiesOnly=yes"]
        for option in target.options:
            opts += ["-o", option]
        self.ssh_opts = opts

    def _argv(self, remote: Sequence[str]) -> list[str]:
        # ssh hands the remote side one string for the login shell; shlex.join makes each
        # argument arrive literally, whatever quotes, semicolons or $() it contains.
        return ["ssh", *self.ssh_opts, self.target.destination, "--", shlex.join(remote)]

    def _unreachable(self, stderr: bytes) -> TransportError:
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        detail = lines[-1] if lines else "connection failed"
        return TransportError(
            f"cannot reach {self.target.destination}: {detail}",
            hint=f"check that `ssh {self.target.destination} true` works from this machine",
        )

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        try:
            proc = subprocess.run(
                self._argv(argv),
                input=input if input is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(
                f"command on {self.target.destination} timed out after {timeout}s",
                hint="the host may be overloaded or the network down",
            ) from exc
        if proc.returncode == UNREACHABLE:
            raise self._unreachable(proc.stderr)
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def send_files(self, root: Path, files: Sequence[str], remote_dir: str) -> int:
        if not files:
            return 0
        size = sum((root / f).stat().st_size for f in files)
        use_rsync = self.sync_method == "rsync" or (
            self.sync_method == "auto" and shutil.which("rsync") is not None
        )
        if use_rsync and self._rsync(root, files, remote_dir):
            return size
        self._tar(root, files, remote_dir)
        return size

    def _rsync(self, root: Path, files: Sequence[str], remote_dir: str) -> bool:
        """Send with rsync; False when the host has no rsync (caller falls back to tar)."""
        listing = b"\0".join(f.encode() for f in files) + b"\0"
        # --ignore-times: the content hashes already chose these files; rsync's own
        # size+mtime check could skip a same-size edit made within the same second.
        argv = [
            "rsync", "-a", "--ignore-times", "--from0", "--files-from=-",
            "-e", shlex.join(["ssh", *self.ssh_opts]),
            f"{root}/", f"{self.target.destination}:{_rsync_path(remote_dir)}/",
        ]  # fmt: skip
        proc = subprocess.run(argv, input=listing, capture_output=True, check=False)
        if proc.returncode == 0:
            return True
        err = proc.stderr.decode(errors="replace")
        if "command not found" in err or proc.returncode == 127:
            return False
        if proc.returncode == UNREACHABLE or "connection unexpectedly closed" in err:
            raise self._unreachable(proc.stderr)
        raise TransportError(
            f"rsync to {self.target.destination} failed: {err.strip().splitlines()[-1:]}",
            hint="check free disk space and permissions on the host",
        )

    def _tar(self, root: Path, files: Sequence[str], remote_dir: str) -> None:
        listing = b"\0".join(f.encode() for f in files) + b"\0"
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--null", "-T", "-", "-cf", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert tar.stdin is not None and tar.stdout is not None
        tar.stdin.write(listing)
        tar.stdin.close()
        remote = ["sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf -', "sh", remote_dir]
        proc = subprocess.run(self._argv(remote), stdin=tar.stdout, capture_output=True)
        tar.wait()
        if proc.returncode == UNREACHABLE:
            raise self._unreachable(proc.stderr)
        if proc.returncode != 0 or tar.returncode != 0:
            raise TransportError(
                f"copying files to {self.target.destination} failed: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )

    def fetch(self, remote_path: str, local_path: Path, *, recursive: bool) -> None:
        local_path.parent.mkdir(parents=True, exist_ok=True)
        if recursive:
            local_path.mkdir(parents=True, exist_ok=True)
            remote = ["tar", "-C", remote_path, "-cf", "-", "."]
            extract = ["tar", "-C", str(local_path), "--no-same-owner", "-xf", "-"]
        else:
            remote = ["cat", remote_path]
            extract = []
        ssh = subprocess.Popen(self._argv(remote), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert ssh.stdout is not None and ssh.stderr is not None
        if recursive:
            sink = subprocess.run(extract, stdin=ssh.stdout, capture_output=True)
            ok = sink.returncode == 0
        else:
            tmp = local_path.with_name(local_path.name + ".runctl-part")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(ssh.stdout, out)
            ok = True
        err = ssh.stderr.read()
        ssh.wait()
        if ssh.returncode == UNREACHABLE:
            raise self._unreachable(err)
        if ssh.returncode != 0 or not ok:
            raise TransportError(
                f"copying {remote_path} from {self.target.destination} failed: "
                f"{err.decode(errors='replace').strip()}"
            )
        if not recursive:
            tmp.replace(local_path)

    def _rsync_copy(self, src: str, dst: str, *, compress: bool, resume: bool) -> None:
        argv = ["rsync", "-a", "-e", shlex.join(["ssh", *self.ssh_opts])]
        if compress:
            argv.append("-z")
        # --partial keeps a half-sent file so the next run continues it; without resume every
        # file is sent again (--ignore-times).
        argv.append("--partial" if resume else "--ignore-times")
        proc = subprocess.run([*argv, src, dst], capture_output=True, check=False)
        if proc.returncode == UNREACHABLE:
            raise self._unreachable(proc.stderr)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise TransportError(
                f"rsync {src} -> {dst} failed: {lines[-1] if lines else proc.returncode}",
                hint="check the path exists and free disk space on both ends",
            )

    def copy_to(self, local: Path, remote: str, *, compress: bool, resume: bool) -> None:
        parent = remote.rstrip("/").rsplit("/", 1)[0] if "/" in remote.rstrip("/") else "."
        self.run(["mkdir", "-p", _rsync_path(parent)], timeout=60)
        src = f"{local}/" if local.is_dir() else str(local)
        dst = f"{self.target.destination}:{_rsync_path(remote)}"
        self._rsync_copy(src, dst, compress=compress, resume=resume)

    def copy_from(self, remote: str, local: Path, *, compress: bool, resume: bool) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        probe = self.run(["test", "-d", _rsync_path(remote)], timeout=60)
        src = f"{self.target.destination}:{_rsync_path(remote)}"
        if probe.returncode == 0:
            src += "/"
            local.mkdir(parents=True, exist_ok=True)
        self._rsync_copy(src, str(local), compress=compress, resume=resume)

    def close(self) -> None:
        """Ask the ControlMaster to exit (used by tests and `hosts rm`)."""
        subprocess.run(
            ["ssh", *self.ssh_opts, "-O", "exit", self.target.destination],
            capture_output=True, check=False,
        )  # fmt: skip


def _rsync_path(remote_dir: str) -> str:
    # rsync's remote side expands ~ itself only at the start; relative paths are from $HOME.
    return remote_dir[2:] if remote_dir.startswith("~/") else remote_dir
