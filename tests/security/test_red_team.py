"""Red team: a hostile local user, hostile names and hostile job outputs against runctl.

Each test plays one attack from issue 17 for real: a second local user (created here) squatting
the ControlMaster socket directory, script names and ssh fields that look like options, a
wrong key hiding behind another entry's master, and a job that plants symlinks for `get`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, job_id_of, need

pytestmark = pytest.mark.integration

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
OTHER_USER = "runctlred" if _WORKER == "gw0" else f"runctlred-{_WORKER}"
SYSTEM_PYTHON = "/usr/bin/python3"
SECRET = "s3cr3t-" + "a1b2c3d4e5"

# Run as the other user: listen on the given socket paths (world-connectable) and write down
# every connection and the first bytes it sends.
LISTENER = """
import os, selectors, socket, sys
log = open(sys.argv[1], "ab", buffering=0)
sel = selectors.DefaultSelector()
for path in sys.argv[2:]:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(16)
    sel.register(server, selectors.EVENT_READ)
log.write(b"listening\\n")
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        log.write(b"connection\\n")
        conn.settimeout(2)
        try:
            log.write(conn.recv(65536) + b"\\n")
        except OSError:
            pass
        conn.close()
"""


@pytest.fixture(scope="session")
def other_user() -> str:
    """A second local account, the hostile neighbour on a shared machine."""
    if os.geteuid() != 0:
        need("creating a second local user needs root")
    if shutil.which("runuser") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        need("runuser and /usr/bin/python3 are needed to act as the other user")
    from tests.stands.sshd import _ensure_user

    _ensure_user(OTHER_USER)  # serialised with the sshd stand's useradd
    return OTHER_USER


def _as_user(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, timeout=30)


@pytest.fixture
def remote_dir() -> str:
    return f".runctl-red-{os.urandom(4).hex()}"


@pytest.fixture
def host(cli: CLI, ssh_config: Path, remote_dir: str) -> Iterator[str]:
    done = cli("hosts", "add", "testhost", "--remote-dir", remote_dir)
    assert done.returncode == 0, done.stderr
    yield "testhost"
    cli("hosts", "rm", "testhost")


# ------------------------------------------------------------------- socket dir squatting


def _socket_names(sshd: object, directory: Path) -> list[str]:
    """Where an ssh master for `testhost` would live in ``directory``: OpenSSH's %C name
    (what runctl used before) and the per-identity name it uses now."""
    from runctl.models import SSHTarget
    from runctl.transport.ssh import control_name

    config = str(sshd.ssh_config)  # type: ignore[attr-defined]
    shown = subprocess.run(
        ["ssh", "-G", "-F", config, "-o", f"ControlPath={directory}/%C", "testhost"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = shown.stdout.splitlines()
    names = [ln.split(None, 1)[1] for ln in lines if ln.startswith("controlpath ")]
    return [*names, str(directory / control_name(SSHTarget(host="testhost"), config))]


def test_socket_dir_squatted_by_another_user_never_gets_the_session(
    cli: CLI, ssh_config: Path, sshd: object, project: Path, runctl_home: Path,
    other_user: str, remote_dir: str,
) -> None:  # fmt: skip
    # A long RUNCTL_HOME sends sockets to /tmp, under a name derived from the home path that
    # anyone can compute. The neighbour gets there first: a 0777 dir with a listener inside.
    assert len(str(runctl_home / "cm")) > 45
    digest = hashlib.sha256(str(runctl_home).encode()).hexdigest()[:10]
    squatted = Path("/tmp") / f"runctl-{os.geteuid()}-{digest}"
    evidence = Path(tempfile.mkdtemp(prefix="runctl-red-", dir="/tmp"))
    shutil.chown(evidence, user=other_user)
    log = evidence / "listener.log"
    _as_user(other_user, "mkdir", "-m", "0777", str(squatted))
    listener = subprocess.Popen(
        ["runuser", "-u", other_user, "--", SYSTEM_PYTHON, "-c", LISTENER, str(log),
         *_socket_names(sshd, squatted)],
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not (log.exists() and b"listening" in log.read_bytes()):
            assert listener.poll() is None and time.monotonic() < deadline, "listener failed"
            time.sleep(0.05)
        added = cli("hosts", "add", "testhost", "--remote-dir", remote_dir, timeout=60)
        assert added.returncode == 0, added.stderr
        (project / "secret.py").write_text("import os\nprint('token', os.environ['RED_TOKEN'])\n")
        done = cli("run", "--on", "testhost", "--follow", "--env", f"RED_TOKEN={SECRET}",
                   "secret.py", cwd=project, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"token {SECRET}" in done.stdout
        assert log.read_bytes() == b"listening\n"  # no connection, so no session, no secret
        mine = [p for p in squatted.iterdir() if p.lstat().st_uid == os.geteuid()]
        assert mine == []  # runctl put nothing into the squatted dir
        assert str(squatted) in added.stderr  # the user is told someone squats the path
    finally:
        cli("hosts", "rm", "testhost")
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(10)
        shutil.rmtree(squatted, ignore_errors=True)
        shutil.rmtree(evidence, ignore_errors=True)


def test_planted_socket_dir_link_and_foreign_runtime_dir_are_not_used(
    cli: CLI, ssh_config: Path, other_user: str, remote_dir: str, project: Path
) -> None:
    # A short RUNCTL_HOME keeps sockets in its "cm" subdir. Here "cm" is a link to a 0777 dir
    # of the other user, and XDG_RUNTIME_DIR (the next choice) is theirs too.
    home = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    foreign = Path(tempfile.mkdtemp(prefix="runctl-red-", dir="/tmp"))
    shutil.chown(foreign, user=other_user)
    foreign.chmod(0o777)
    (home / "cm").symlink_to(foreign)
    env = {"RUNCTL_HOME": str(home), "XDG_RUNTIME_DIR": str(foreign)}
    used = None
    try:
        added = cli("hosts", "add", "testhost", "--remote-dir", remote_dir, env=env)
        assert added.returncode == 0, added.stderr
        assert f"not using {home / 'cm'}" in added.stderr
        used = Path((home / "ssh-control-dir").read_text().strip())
        info = used.lstat()
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert [p for p in used.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]
        assert list(foreign.iterdir()) == []
        # The next command finds the same private dir (and its master) again.
        ran = cli("run", "--on", "testhost", "--wait", "hello.py", cwd=project, env=env)
        assert ran.returncode == 0, ran.stderr
        assert Path((home / "ssh-control-dir").read_text().strip()) == used
    finally:
        cli("hosts", "rm", "testhost", env=env)
        for path in (home, foreign, used):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------ option-like script names

# Each name is code for its interpreter when read as an option; the file itself is harmless.
# The code prints PWNED built from parts, so the name alone never contains the word.
OPTION_NAMES = {
    "python": ("-cprint('PW'+'NED')#.py", "print('file ran')\n"),
    "bash": ("-cecho${IFS}PW''NED;#.sh", "echo file ran\n"),
}


def _run_option_named(cli: CLI, project: Path, on: str, kind: str,
                      env: dict[str, str] | None = None) -> None:  # fmt: skip
    name, body = OPTION_NAMES[kind]
    (project / name).write_text(body)
    done = cli("run", "--on", on, "--follow", str(project / name), cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "file ran" in done.stdout
    assert "PWNED" not in done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["python", "bash", "uv"])
def test_script_named_like_an_option_runs_as_a_file_locally(
    cli: CLI, project: Path, kind: str
) -> None:
    env = None
    if kind == "uv":  # the agent runs .py scripts through `uv run` when uv is on PATH
        uv = REPO / ".venv" / "bin"
        if not (uv / "uv").exists():
            need("uv is not installed in the repo's venv")
        env = {"PATH": f"{uv}:{os.environ['PATH']}", "UV_OFFLINE": "1"}
    _run_option_named(cli, project, "local", "python" if kind == "uv" else kind, env)


@pytest.mark.parametrize("kind", ["python", "bash"])
def test_script_named_like_an_option_runs_as_a_file_on_a_host(
    cli: CLI, host: str, project: Path, kind: str
) -> None:
    _run_option_named(cli, project, host, kind)


# ---------------------------------------------------------------- ssh option injection


@pytest.mark.parametrize(
    "args",
    [
        ["testhost", "--user", "-oProxyCommand=touch {marker}"],
        ["--", "-oProxyCommand=touch {marker}"],
        ["-oProxyCommand@127.0.0.1"],
        ["127.0.0.1", "--user", "bob smith"],
        ["127.0.0.1", "--remote-dir", "-rf"],
        ["127.0.0.1", "--remote-dir", "dir with space"],
        ["127.0.0.1", "--python", "-cimport os"],
        ["bad\nhost"],
    ],
    ids=["user-option", "host-option", "user-in-destination", "user-space", "dir-option",
         "dir-space", "python-option", "host-newline"],
)  # fmt: skip
def test_option_like_host_fields_are_refused_at_hosts_add(
    cli: CLI, ssh_config: Path, tmp_path: Path, args: list[str]
) -> None:
    marker = tmp_path / "pwned"
    argv = [a.replace("{marker}", str(marker)) for a in args]
    done = cli("hosts", "add", "--no-check", "evil", *argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "evil" not in cli("hosts", "list").stdout
    assert not marker.exists()


@pytest.mark.parametrize(
    "target", ["ssh:-Fx@127.0.0.1", "ssh:-oProxyCommand@127.0.0.1", "ssh:me@-oFoo"]
)
def test_option_like_inline_ssh_targets_are_refused(
    cli: CLI, ssh_config: Path, project: Path, target: str
) -> None:
    done = cli("run", "--on", target, "hello.py", cwd=project)
    assert done.returncode == 2, done.stderr
    assert "invalid ssh destination" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------- masters per identity


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)  # fmt: skip


def _direct(sshd: object, remote_dir: str, key: Path) -> list[str]:
    """`hosts add` arguments for the stand by address, not alias, with ``key``."""
    return [
        "127.0.0.1", "--user", sshd.user, "--port", str(sshd.port),  # type: ignore[attr-defined]
        "-o", f"UserKnownHostsFile={sshd.known_hosts}",  # type: ignore[attr-defined]
        "-o", "StrictHostKeyChecking=yes", "--remote-dir", remote_dir, "--key", str(key),
    ]  # fmt: skip


def test_wrong_key_entry_does_not_ride_another_entrys_master(
    cli: CLI, ssh_config: Path, sshd: object, tmp_path: Path, remote_dir: str
) -> None:
    wrong = tmp_path / "wrong_key"
    _keygen(wrong)
    good = cli("hosts", "add", "good", *_direct(sshd, remote_dir, sshd.key))  # type: ignore[attr-defined]
    assert good.returncode == 0, good.stderr
    try:
        # Same user@host:port as `good`, whose master is up, but a key the host refuses.
        bad = cli("hosts", "add", "bad", *_direct(sshd, remote_dir, wrong), "--json")
        assert bad.returncode in (4, 7), bad.stdout + bad.stderr
        assert "Permission denied" in bad.stderr
        names = [h["name"] for h in json.loads(cli("hosts", "list", "--json").stdout)["hosts"]]
        assert names == ["good"]
    finally:
        cli("hosts", "rm", "good")


def _sockets(runctl_home: Path) -> list[Path]:
    from runctl.transport.ssh import control_dir

    found = control_dir(runctl_home)
    return [p for p in found.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]


def test_hosts_rm_closes_the_master_connection(
    cli: CLI, ssh_config: Path, runctl_home: Path, remote_dir: str
) -> None:
    added = cli("hosts", "add", "testhost", "--remote-dir", remote_dir)
    assert added.returncode == 0, added.stderr
    assert len(_sockets(runctl_home)) == 1
    removed = cli("hosts", "rm", "testhost")
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 5
    while _sockets(runctl_home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sockets(runctl_home) == []


# ------------------------------------------------------------------- local `get` links


def test_local_get_copies_links_as_links_and_reads_nothing_outside(
    cli: CLI, project: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "home" / ".ssh"
    keys.mkdir(parents=True)
    (keys / "id_ed25519").write_text("PRIVATE KEY\n")
    (project / "links.py").write_text(
        "import os\n"
        "out = os.environ['RUNCTL_OUTPUT_DIR']\n"
        "open(os.path.join(out, 'm.json'), 'w').write('{}')\n"
        "os.symlink('/etc/passwd', os.path.join(out, 'passwd'))\n"
        f"os.symlink({str(keys)!r}, os.path.join(out, 'ssh'))\n"
        "os.symlink('../../..', os.path.join(out, 'up'))\n"
        "os.mkfifo(os.path.join(out, 'pipe'))\n"
    )
    job = job_id_of(cli("run", "--wait", "links.py", cwd=project))
    got = tmp_path / "got"
    done = cli("get", job, "outputs", str(got), timeout=60)
    assert done.returncode == 0, done.stderr
    assert (got / "m.json").read_text() == "{}"
    assert all((got / link).is_symlink() for link in ("passwd", "ssh", "up"))
    regular = [p for p in got.rglob("*") if p.is_file() and not p.is_symlink()]
    assert regular == [got / "m.json"]
    for path in ("outputs/passwd", "outputs/ssh", "outputs/ssh/id_ed25519", "outputs/up",
                 "outputs/up/state.db"):  # fmt: skip
        refused = cli("get", job, path, str(tmp_path / "stolen"))
        assert refused.returncode == 2, (path, refused.stderr)
        assert "outside" in refused.stderr
    assert not (tmp_path / "stolen").exists()


def test_hosts_add_replace_with_a_new_key_closes_the_old_entrys_master(
    cli: CLI, ssh_config: Path, sshd: object, runctl_home: Path, tmp_path: Path, remote_dir: str
) -> None:
    added = cli("hosts", "add", "box", *_direct(sshd, remote_dir, sshd.key))  # type: ignore[attr-defined]
    assert added.returncode == 0, added.stderr
    [old] = _sockets(runctl_home)
    new_key = tmp_path / "new_key"
    shutil.copy(sshd.key, new_key)  # type: ignore[attr-defined]
    new_key.chmod(0o600)
    try:
        # The entry now logs in with another key: the old identity's session must not
        # linger for ControlPersist (up to 10 minutes) after the user replaced it.
        done = cli("hosts", "add", "box", "--replace", *_direct(sshd, remote_dir, new_key))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while os.path.lexists(old) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.lexists(old)
        assert len(_sockets(runctl_home)) == 1  # the new entry's own master
        # Replacing with the same identity keeps the master it just checked with.
        [current] = _sockets(runctl_home)
        done = cli("hosts", "add", "box", "--replace", *_direct(sshd, remote_dir, new_key))
        assert done.returncode == 0, done.stderr
        assert _sockets(runctl_home) == [current]
    finally:
        cli("hosts", "rm", "box")
