"""A real OpenSSH server on 127.0.0.1 for integration tests (stdlib only).

Follows the tested ``ci/sshd.sh`` recipe (docs: test-infra.md). Needs root: it creates a
test user and runs ``/usr/sbin/sshd``. Everything else lives in ``workdir``::

    stand = start_sshd(tmp_path / "ssh")
    subprocess.run(["ssh", "-F", stand.ssh_config, stand.alias(), "true"], check=True)
    stand.stop()

Safe to run beside other test sessions on the same machine: the port is picked at random,
and each stand authorizes its own key in a per-stand file under ``~user/.ssh/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd re-execs itself, so it must be started by absolute path
ALIAS = "testhost"
START_TIMEOUT_S = 10.0
# One login user per pytest-xdist worker: remote runctl dirs live in the user's home, and
# workers must not share them (gw0 and plain runs keep the plain name).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
DEFAULT_USER = "runctltest" if _WORKER == "gw0" else f"runctltest-{_WORKER}"
_KEYS_PREFIX = "authorized_keys.runctl-"
_PR_SET_PDEATHSIG = 1
USER_LOCK = Path("/run/runctl-test/user.lock")

# Must never print anything: runctl parses remote stdout.
_BASHRC = """\
# runctl test user. Must stay silent: tests parse the stdout of remote commands.
case $- in *i*) ;; *) return ;; esac
"""


@dataclass
class SSHStand:
    workdir: Path
    port: int
    user: str
    key: Path
    ssh_config: Path
    known_hosts: Path
    sshd_config: Path
    proc: subprocess.Popen[bytes]
    host_key: Path
    authorized_keys: Path
    log: Path

    def alias(self) -> str:
        """The ``Host`` alias in ``ssh_config`` for 127.0.0.1:port."""
        return ALIAS

    def ssh_argv(self, host: str | None = None) -> list[str]:
        """``["ssh", "-F", ssh_config, host]``; append the remote command."""
        return ["ssh", "-F", str(self.ssh_config), host or self.alias()]

    def stop(self) -> None:
        """Stop sshd, its sessions and anything detached from them; idempotent."""
        leftovers = descendants(self.proc.pid) + _session_procs(self.user, "127.0.0.1", self.port)
        terminate([self.proc], leftovers)
        with contextlib.suppress(FileNotFoundError):
            self.authorized_keys.unlink()


def ssh_available() -> str | None:
    """Why a stand cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "sshd stand needs root (it creates a user and runs sshd)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} missing (apt-get install openssh-server)"
    for tool, package in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install {package})"
    if shutil.which("rsync") is None:
        return "rsync missing (apt-get install rsync)"
    return None


def start_sshd(workdir: Path, user: str = DEFAULT_USER) -> SSHStand:
    """Start sshd on a free 127.0.0.1 port; return once ``ssh testhost true`` works."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir

    home, uid, gid = _ensure_user(user)
    key = workdir / "id_ed25519"
    host_key = workdir / "host_ed25519"
    _keygen(key, "runctl-test")
    _keygen(host_key, "runctl-test-host")

    # One authorized-keys file per stand, so that concurrent sessions don't clobber each other.
    ssh_dir = home / ".ssh"
    _install_dir(ssh_dir, 0o700, uid, gid)
    _prune_stale_keys(ssh_dir)
    authorized_keys = ssh_dir / f"{_KEYS_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    authorized_keys.write_text((workdir / "id_ed25519.pub").read_text())
    os.chown(authorized_keys, uid, gid)
    os.chmod(authorized_keys, 0o600)

    known_hosts = workdir / "known_hosts"
    ssh_config = workdir / "ssh_config"
    sshd_config = workdir / "sshd_config"
    log = workdir / "sshd.log"
    host_pub = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])

    last_error = ""
    for _attempt in range(5):  # retry only when another process grabbed our port first
        port = _free_port()
        _write_sshd_config(sshd_config, port, host_key, workdir, authorized_keys.name, user)
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        ssh_config.write_text(host_block(ALIAS, "127.0.0.1", user, key, known_hosts, port=port))
        proc = spawn_daemon([SSHD, "-D", "-e", "-f", str(sshd_config)], log)
        stand = SSHStand(
            workdir=workdir,
            port=port,
            user=user,
            key=key,
            ssh_config=ssh_config,
            known_hosts=known_hosts,
            sshd_config=sshd_config,
            proc=proc,
            host_key=host_key,
            authorized_keys=authorized_keys,
            log=log,
        )
        try:
            wait_for_ssh(stand.ssh_argv(), proc, log, START_TIMEOUT_S)
            return stand
        except _SshdExited as exc:
            stand.stop()
            last_error = str(exc)
            if "Address already in use" not in last_error:
                break
        except BaseException:
            stand.stop()
            raise
    with contextlib.suppress(FileNotFoundError):
        authorized_keys.unlink()
    raise RuntimeError(f"sshd stand failed to start: {last_error}")


def host_block(
    alias: str, hostname: str, user: str, key: Path, known_hosts: Path, port: int | None = None
) -> str:
    """An ssh_config ``Host`` block with strict host-key checking and no prompts."""
    lines = [f"Host {alias}", f"  HostName {hostname}"]
    if port is not None:
        lines.append(f"  Port {port}")
    lines += [
        f"  User {user}",
        f"  IdentityFile {key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts}",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
    ]
    return "\n".join(lines) + "\n"


def wait_for_ssh(
    argv: list[str], proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ``argv + ["true"]`` until it succeeds; raise RuntimeError with the log tail."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if proc.poll() is not None:
            raise _SshdExited(f"sshd exited with {proc.returncode}; log tail:\n{log_tail(log)}")
        left = deadline - time.monotonic()
        try:
            result = subprocess.run(
                [*argv[:1], "-o", "ConnectTimeout=2", *argv[1:], "true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(left, 0.5) + 1,
                check=False,
            )
            if result.returncode == 0:
                return
            last = result.stderr.strip()
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"ssh did not work within {timeout:.0f} s ({' '.join(argv)}): {last}\n"
                f"sshd log tail ({log}):\n{log_tail(log)}"
            )
        time.sleep(0.05)


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class _SshdExited(RuntimeError):
    pass


def spawn_daemon(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a daemon that logs to ``log`` and gets SIGTERM if this thread dies (even kill -9).

    PR_SET_PDEATHSIG survives exec (sshd, ip netns exec, unshare, sh are not setuid), so a
    crashed test session leaves no sshd behind. Spawn from a thread that outlives the stand.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    with open(log, "ab") as err:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=die_with_parent,
        )


def _free_port() -> int:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    except (OSError, RuntimeError):  # RuntimeError: pytest-socket may block sockets
        return random.randint(20000, 59999)


def _ensure_user(user: str) -> tuple[Path, int, int]:
    # Concurrent sessions (pytest-xdist workers, two checkouts) must not run useradd at once:
    # racing useradds have left a home owned by a uid that no longer exists.
    USER_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with USER_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_user_locked(user)


def _ensure_user_locked(user: str) -> tuple[Path, int, int]:
    for attempt in range(20):
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            _retry_tool(["useradd", "-m", "-s", "/bin/bash", user], attempt)
            continue
        if not _password_field(user).startswith("!"):
            break
        # sshd with UsePAM no refuses locked ('!') accounts ("account is locked").
        _retry_tool(["usermod", "-p", "*", user], attempt)
    else:
        raise RuntimeError(f"could not create and unlock the test user {user}")
    home = Path(pw.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o755)
        for item in Path("/etc/skel").glob("*") if Path("/etc/skel").is_dir() else []:
            if item.is_file():
                shutil.copy(item, home / item.name)
                os.chown(home / item.name, pw.pw_uid, pw.pw_gid)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    if home.stat().st_uid != pw.pw_uid:  # left by an earlier user of that name
        for path in [home, *home.rglob("*")]:
            os.lchown(path, pw.pw_uid, pw.pw_gid)
    for name, text in ((".bashrc", _BASHRC), (".hushlogin", "")):
        path = home / name
        if not path.exists() or path.read_text(errors="replace") != text:
            path.write_text(text)
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return home, pw.pw_uid, pw.pw_gid


def _retry_tool(argv: list[str], attempt: int) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if attempt >= 19:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        time.sleep(0.1)


def _password_field(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1]
    return ""


def _keygen(path: Path, comment: str) -> None:
    if path.exists() and Path(f"{path}.pub").exists():
        return
    for stale in (path, Path(f"{path}.pub")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )
    os.chmod(path, 0o600)


def _install_dir(path: Path, mode: int, uid: int, gid: int) -> None:
    path.mkdir(exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _prune_stale_keys(ssh_dir: Path) -> None:
    """Remove the keys files of stands whose test process is gone (crashed runs)."""
    for path in ssh_dir.glob(f"{_KEYS_PREFIX}*"):
        owner = path.name[len(_KEYS_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or not _alive(int(owner)):
            with contextlib.suppress(OSError):
                path.unlink()


def _write_sshd_config(
    path: Path, port: int, host_key: Path, workdir: Path, keys_name: str, user: str
) -> None:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile .ssh/{keys_name}",
        f"AllowUsers {user}",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "MaxSessions 64",
        "MaxStartups 100:30:200",
        "Subsystem sftp internal-sftp",
        # No AcceptEnv: the client's environment never leaks into remote commands.
    ]
    # OpenSSH >= 9.8 penalizes sources that fail to authenticate (e.g. connections cut by
    # fault-injection tests) by refusing them for a while; switch that off where it exists.
    path.write_text("\n".join([*lines, "PerSourcePenalties no"]) + "\n")
    if _sshd_test(path) is None:
        return
    path.write_text("\n".join(lines) + "\n")
    error = _sshd_test(path)
    if error is not None:
        raise RuntimeError(f"sshd -t rejected {path}: {error}")


def _sshd_test(path: Path) -> str | None:
    result = subprocess.run(
        [SSHD, "-t", "-f", str(path)], capture_output=True, text=True, check=False
    )
    return None if result.returncode == 0 else (result.stderr.strip() or f"rc {result.returncode}")


def _session_procs(user: str, server_addr: str, port: int) -> list[int]:
    """Pids of ``user``'s processes started over ssh to server_addr:port, detached ones too.

    sshd sets SSH_CONNECTION="client_ip client_port server_ip server_port" and every
    descendant inherits it, even after setsid/nohup reparents it to init.
    """
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    wanted = f" {server_addr} {port}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(b"SSH_CONNECTION=") and var.endswith(wanted):
                pids.append(int(entry.name))
                break
    return pids


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (sshd forks one child per connection)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def terminate(procs: list[subprocess.Popen[bytes]], pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM procs (ours, reaped) and bare pids; SIGKILL whatever outlives ``grace``."""
    own = {p.pid for p in procs}
    others = [pid for pid in pids if pid not in own]
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for pid in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    while others and time.monotonic() < deadline:
        others = [pid for pid in others if _alive(pid)]
        if others:
            time.sleep(0.02)
    for pid in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
