"""SSH transport on the system OpenSSH client.

Using ``ssh`` itself (not a Python SSH library) means ~/.ssh/config aliases, agents, jump hosts
and certificates work exactly as they do for the user. One ControlMaster socket per host is kept
warm (``ControlPersist``) so every later command is a cheap multiplexed round trip; trees move
with rsync over the same connection, or tar when rsync is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runctl.errors import TransportError, UsageError
from runctl.models import Completed, SSHTarget
from runctl.transport.base import Transport

UNREACHABLE = 255  # ssh's own exit code for connection failures
# sun_path is 108 bytes; ssh adds "/<40 hex name>.<16 random>" while creating the socket.
SOCKET_DIR_MAX = 45
POINTER = "ssh-control-dir"  # in RUNCTL_HOME: the fallback socket dir picked earlier
_noticed: set[str] = set()


def check_word(what: str, value: str) -> str:
    """``value`` unless it could reach ssh, rsync or a shell as something else: a leading
    ``-`` turns a host, user or path into an option, and whitespace or control characters
    split or hide it. UsageError names the field."""
    bad = (
        not value
        or value.startswith("-")
        or any(c.isspace() or not c.isprintable() for c in value)
    )
    if bad:
        raise UsageError(
            f"invalid {what} {value!r}",
            hint="no leading '-', whitespace or control characters",
        )
    return value


def check_target(target: SSHTarget) -> None:
    check_word("ssh host", target.host)
    if target.user is not None:
        check_word("ssh user", target.user)


def _is_private_dir(path: Path) -> str | None:
    """Why ``path`` is not a directory only we can use, or None when it is.

    lstat, so a symlink planted in its place is refused rather than followed; a dir another
    user owns, or one others may write to, lets them swap the master socket for their own.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or "cannot stat"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory (a symlink?)"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o077:
        return f"mode {stat.S_IMODE(st.st_mode):04o}"
    return None


def _safe_parent(path: Path) -> bool:
    """Others cannot rename or replace entries of ``path`` (ours or root's, and not writable
    by others unless sticky, like /tmp)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        return False
    return not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX)


def _claim(path: Path) -> str | None:
    """Create ``path`` 0700 (or find it); why it cannot hold our sockets, or None."""
    if not _safe_parent(path.parent):
        return f"its parent {path.parent} is open to other users"
    try:
        os.mkdir(path, 0o700)  # never exist_ok + chmod: a squatter's dir must stay refused
    except FileExistsError:
        pass
    except OSError as exc:
        return exc.strerror or "cannot create"
    return _is_private_dir(path)


def _plain(path: str) -> bool:
    """ssh splits ``-o ControlPath=...`` at whitespace and expands % tokens in it."""
    return not any(c.isspace() or c in "%\"'" for c in path)


def _notice(path: Path, why: str, moved_to: Path) -> None:
    if str(path) not in _noticed:
        _noticed.add(str(path))
        print(f"note: not using {path} for ssh sockets ({why}); using {moved_to}",
              file=sys.stderr)  # fmt: skip


def control_dir(home: Path) -> Path:
    """A directory for ControlMaster sockets: short enough for AF_UNIX, and one only this
    user can enter. Anyone who can write there can replace a master socket with their own
    listener and receive our ssh sessions, job specs and secrets."""
    preferred = home / "cm"
    if len(str(preferred)) > SOCKET_DIR_MAX or not _plain(str(preferred)):
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
        preferred = Path("/tmp") / f"runctl-{os.geteuid()}-{digest}"
    else:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    why = _claim(preferred)
    if why is None:
        return preferred
    moved = _fallback_dir(home)
    _notice(preferred, why, moved)
    return moved


def _fallback_dir(home: Path) -> Path:
    """A fresh, unguessable 0700 dir (mkdtemp), recorded in RUNCTL_HOME so that later
    commands find the same masters; refused with a clear error when none can be made."""
    pointer = home / POINTER
    try:
        recorded = Path(pointer.read_text().strip())
    except OSError:
        recorded = None
    if (
        recorded is not None
        and len(str(recorded)) <= SOCKET_DIR_MAX
        and _safe_parent(recorded.parent)
        and _is_private_dir(recorded) is None
    ):
        return recorded
    bases = [os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"]
    for base in dict.fromkeys(b for b in bases if b):
        # mkdtemp adds 8 random characters to the prefix.
        if len(base) + len(f"/runctl-{os.geteuid()}-") + 8 > SOCKET_DIR_MAX or not _plain(base):
            continue
        if not _safe_parent(Path(base)):
            continue
        try:
            made = Path(tempfile.mkdtemp(prefix=f"runctl-{os.geteuid()}-", dir=base))
        except OSError:
            continue
        if _is_private_dir(made) is None:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = pointer.with_name(f"{POINTER}.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"{made}\n")
            tmp.replace(pointer)
            return made
    raise TransportError(
        "found no private directory for ssh control sockets",
        hint="set RUNCTL_HOME to a short path you own (its 'cm' subdirectory is used)",
    )


def control_name(target: SSHTarget, config_file: str = "") -> str:
    """The socket name for ``target``: a hash of everything that picks the identity ssh
    logs in with (ssh config file and its text, destination, user, port, key path and key
    bytes, -o options), so two entries differing in any of them never share a master. 40
    hex characters, as long as OpenSSH's %C, to keep within sun_path."""
    # ssh reads ~/.ssh/config when no -F is given, so its text counts too.
    config = config_file or os.path.expanduser("~/.ssh/config")
    files = {}
    for path in (config, os.path.expanduser(target.identity_file or "")):
        if path:
            try:
                files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                files[path] = "unreadable"
    identity = [config_file, target.host, target.user, target.port, list(target.options), files]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]


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
        check_target(target)
        self.target = target
        self.label = f"ssh {target.destination}"
        self.python = python
        self.sync_method = sync_method
        config_path = os.path.expanduser(config_file) if config_file else ""
        opts = [
            "-o", "BatchMode=yes",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={control_dir(home)}/{control_name(target, config_path)}",
            "-o", f"ControlPersist={control_persist_s}",
            # Detect a dead network in ~6 s instead of hanging on a half-open TCP connection.
            "-o", "ServerAliveInterval=2",
            "-o", "ServerAliveCountMax=3",
            "-o", f"ConnectTimeout={connect_timeout_s}",
        ]  # fmt: skip
        if config_file:
            opts = ["-F", config_path, *opts]
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
        # "--" before the destination: nothing after it is read as an ssh option, and ssh
        # then takes every later word as the remote command (a second "--" would be sent).
        return ["ssh", *self.ssh_opts, "--", self.target.destination, shlex.join(remote)]

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
        remote = ["sh", "-c", 'mkdir -p -- "$1" && tar -C "$1" -xf -', "sh", remote_dir]
        proc = subprocess.run(self._argv(remote), stdin=tar.stdout, capture_output=True)
        tar.wait()
        if proc.returncode == UNREACHABLE:
            raise self._unreachable(proc.stderr)
        if proc.returncode != 0 or tar.returncode != 0:
            raise TransportError(
                f"copying files to {self.target.destination} failed: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )

    def fetch(
        self, remote_path: str, local_path: Path, *, recursive: bool, exclude: Sequence[str] = ()
    ) -> None:
        local_path.parent.mkdir(parents=True, exist_ok=True)
        if recursive:
            local_path.mkdir(parents=True, exist_ok=True)
            skip = [f"--exclude=./{name}" for name in exclude]
            remote = ["tar", "-C", remote_path, *skip, "-cf", "-", "."]
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
        self.run(["mkdir", "-p", "--", _rsync_path(parent)], timeout=60)
        # Absolute, so that a local name such as "-e x" can never read as an rsync option.
        local = local.absolute()
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
        self._rsync_copy(src, str(local.absolute()), compress=compress, resume=resume)

    def close(self) -> None:
        """Ask the ControlMaster to exit (used by tests and `hosts rm`)."""
        # No master: ssh says so at once without connecting. A wedged one must not hang us.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ["ssh", *self.ssh_opts, "-O", "exit", "--", self.target.destination],
                capture_output=True, check=False, timeout=15,
            )  # fmt: skip


def _rsync_path(remote_dir: str) -> str:
    # rsync's remote side expands ~ itself only at the start; relative paths are from $HOME.
    return remote_dir[2:] if remote_dir.startswith("~/") else remote_dir
