"""Red team: what `runctl run` uploads when started from a home directory, /etc, a dotfiles
repository or a project full of credentials, checked on a real sshd host's code directory.

HOME points at a fake home holding what a real one does: SSH keys, AWS credentials, shell
history, a .env, a 5 MB download and a dotfiles .git.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runctl.core.sync_select import ProjectRoot, Selection, find_project, select_files
from tests.conftest import CLI

pytestmark = pytest.mark.integration

KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nred-team-key-material\n"
AWS_TEXT = "[default]\naws_secret_access_key = red-team-aws-secret\n"
MARKERS = ("red-team-key-material", "red-team-aws-secret", "red-team-history", "RED_TEAM_TOKEN")


def _write(path: Path, text: str | bytes = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _secrets_into(directory: Path) -> None:
    """What a home directory holds that must never reach a host."""
    _write(directory / ".ssh" / "id_ed25519", KEY_TEXT)
    _write(directory / ".ssh" / "id_ed25519.pub", "ssh-ed25519 AAAA red-team\n")
    _write(directory / ".aws" / "credentials", AWS_TEXT)
    _write(directory / ".bash_history", "export TOKEN=red-team-history\n")
    _write(directory / ".env", "RED_TEAM_TOKEN=1\n")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake $HOME with keys, credentials, history, .env, a download and a dotfiles .git."""
    home = tmp_path / "home"
    _secrets_into(home)
    _write(home / "Downloads" / "dataset.bin", os.urandom(5 * 1024 * 1024))
    _write(home / ".git" / "HEAD", "ref: refs/heads/main\n")  # a dotfiles repository
    _write(home / ".bashrc", "alias ll='ls -l'\n")
    _write(home / "train.py", "print('trained', flush=True)\n")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def remote(cli: CLI, ssh_config: Path, sshd: object) -> str:
    """A fresh runctl dir on the sshd host, registered as host `testhost`."""
    remote = f".runctl-test-{os.urandom(4).hex()}"
    done = cli("hosts", "add", "testhost", "--remote-dir", remote, "--json")
    assert done.returncode == 0, done.stderr
    return remote


def _ssh(sshd: object, script: str) -> str:
    out = subprocess.run(
        [*sshd.ssh_argv(), script],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return str(out.stdout)


def _host_code(sshd: object, remote: str) -> dict[str, int]:
    """Every file synced into any project's code dir on the host: {project/path: size}."""
    listing = _ssh(
        sshd,
        f"cd {remote}/code 2>/dev/null || exit 0; for p in *; do [ -d $p/current ] && "
        f'(cd $p/current && find . -type f -not -path ./.runctl/\\* -printf "$p/%P %s\\n"); '
        "done; true",
    )
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in listing.splitlines()}


def _host_has_marker(sshd: object, remote: str) -> list[str]:
    """Secret texts found anywhere under the host's runctl dir."""
    found = []
    for marker in MARKERS:
        hit = _ssh(sshd, f"grep -rl {marker} {remote} 2>/dev/null; true")
        if hit.strip():
            found.append(f"{marker}: {hit.strip()}")
    return found


def _jobs(cli: CLI) -> list[dict[str, object]]:
    done = cli("jobs", "--no-refresh", "--json")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


def _summary(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sync: ")]


# ------------------------------------------------------------------------ whole home


def test_running_a_script_in_my_home_sends_only_that_script(
    cli: CLI, remote: str, sshd: object, home: Path
) -> None:
    done = cli("run", "--on", "testhost", "--json", "train.py", cwd=home)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # stdout is the JSON document alone: the summary went to stderr
    assert _host_code(sshd, remote) == {"home/train.py": len("print('trained', flush=True)\n")}
    assert _host_has_marker(sshd, remote) == []
    [line] = _summary(done.stderr)
    assert line.startswith("sync: 1 file, ")
    assert "only train.py" in line and "--project-root DIR" in line


def test_exec_from_my_home_sends_no_files(cli: CLI, remote: str, sshd: object, home: Path) -> None:
    done = cli("exec", "--on", "testhost", "--", "ls", "-A", cwd=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() in ([], [".runctl"])
    assert "sync: 0 files" in done.stderr
    assert _host_code(sshd, remote) == {}


def test_including_one_credential_file_sends_that_file_alone(
    cli: CLI, remote: str, sshd: object, home: Path
) -> None:
    done = cli("run", "--on", "testhost", "--include", ".aws/credentials", "train.py", cwd=home)
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) == {"home/train.py", "home/.aws/credentials"}


def test_a_dotfiles_git_in_home_does_not_make_home_the_project(
    cli: CLI, remote: str, sshd: object, home: Path
) -> None:
    _write(home / "exp" / "train.py", "print('exp', flush=True)\n")
    _write(home / "exp" / "util.py", "X = 1\n")
    done = cli("run", "--on", "testhost", "train.py", cwd=home / "exp")
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) == {"exp/train.py"}
    # A marker makes exp/ a project, never home: its siblings stay behind.
    _write(home / "exp" / "pyproject.toml", "[project]\nname = 'exp'\n")
    done = cli("run", "--on", "testhost", "train.py", cwd=home / "exp")
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) == {
        "exp/train.py", "exp/util.py", "exp/pyproject.toml",
    }  # fmt: skip
    assert _host_has_marker(sshd, remote) == []


def test_project_root_names_the_directory_to_send(
    cli: CLI, remote: str, sshd: object, home: Path
) -> None:
    _write(home / "exp" / "train.py", "print('exp', flush=True)\n")
    _write(home / "exp" / "data" / "a.csv", "1,2\n")
    done = cli("run", "--on", "testhost", "--project-root", str(home / "exp"), "train.py",
               cwd=home / "exp")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) == {"exp/train.py", "exp/data/a.csv"}
    outside = cli("run", "--on", "testhost", "--project-root", str(home / "exp" / "data"),
                  "train.py", cwd=home / "exp")  # fmt: skip
    assert outside.returncode == 2
    assert "outside the project root" in outside.stderr


# ------------------------------------------------------------------------------- /etc


def test_etc_passwd_as_the_script_sends_nothing_else_of_etc(
    cli: CLI, remote: str, sshd: object, home: Path
) -> None:
    done = cli("run", "--on", "testhost", "/etc/passwd", cwd=home)
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) <= {"etc/passwd"}
    assert _ssh(sshd, f"find {remote} -name shadow -o -name 'ssh_host_*'; true").strip() == ""


# --------------------------------------------------------------------- a real project


@pytest.fixture
def leaky_project(home: Path) -> Path:
    """A project in the home directory that also holds credentials of every kind."""
    root = home / "proj"
    _write(root / "pyproject.toml", "[project]\nname = 'proj'\n")
    _write(root / "train.py", "print('proj', flush=True)\n")
    _write(root / "pkg" / "model.py", "W = 1\n")
    _write(root / "id_rsa_check.py", "OK = 1\n")  # code, not a key
    _secrets_into(root)
    _write(root / ".env.production", "RED_TEAM_TOKEN=2\n")
    _write(root / "certs" / "server.pem", KEY_TEXT)
    _write(root / "deploy" / ".docker" / "config.json", '{"auths": {"x": "RED_TEAM_TOKEN"}}')
    _write(root / ".netrc", "machine x password RED_TEAM_TOKEN\n")
    _write(root / ".config" / "gcloud" / "credentials.db", "RED_TEAM_TOKEN")
    (root / "notes.txt").symlink_to(root / ".ssh" / "id_ed25519")  # an innocent name
    return root


def test_project_sync_leaves_every_secret_behind_and_says_so(
    cli: CLI, remote: str, sshd: object, leaky_project: Path
) -> None:
    done = cli("run", "--on", "testhost", "train.py", cwd=leaky_project)
    assert done.returncode == 0, done.stderr
    assert set(_host_code(sshd, remote)) == {
        "proj/pyproject.toml", "proj/train.py", "proj/pkg/model.py", "proj/id_rsa_check.py",
    }  # fmt: skip
    assert _host_has_marker(sshd, remote) == []
    [line] = _summary(done.stderr)
    assert "excluded 10 secret-looking paths: " in line and "--include" in line
    assert ".aws/" in line and ".bash_history" in line


def test_include_brings_back_a_named_secret_but_a_wildcard_does_not(
    cli: CLI, remote: str, sshd: object, leaky_project: Path
) -> None:
    done = cli("run", "--on", "testhost", "--include", ".env",
               "--include", "*", "train.py", cwd=leaky_project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent = set(_host_code(sshd, remote))
    assert "proj/.env" in sent
    assert not {s for s in sent if ".ssh" in s or ".aws" in s or s.endswith(".pem")}


def test_dry_run_lists_exactly_what_a_real_run_sends(
    cli: CLI, remote: str, sshd: object, leaky_project: Path
) -> None:
    _write(leaky_project / ".gitignore", "outputs/\n*.log\n")
    _write(leaky_project / "outputs" / "big.ckpt", "ckpt")
    _write(leaky_project / "run.log", "log")
    _write(leaky_project / "data" / "train.csv", "a,b\n" * 1000)
    dry = cli("run", "--on", "testhost", "--dry-run", "--json",
              "--include", "outputs/", "train.py", cwd=leaky_project)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert _jobs(cli) == []  # nothing recorded
    assert _host_code(sshd, remote) == {}  # nothing sent
    assert plan["scope"] == "project" and plan["root"] == str(leaky_project)
    listed = {row["path"]: row["size"] for row in plan["files"]}
    assert "outputs/big.ckpt" in listed and "run.log" not in listed
    assert ".env" in plan["excluded_secrets"]
    text = cli("run", "--on", "testhost", "--dry-run", "--include", "outputs/", "train.py",
               cwd=leaky_project)  # fmt: skip
    assert sorted(line.split()[-1] for line in text.stdout.splitlines()) == sorted(listed)

    done = cli("run", "--on", "testhost", "--include", "outputs/", "train.py",
               cwd=leaky_project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _host_code(sshd, remote) == {f"proj/{p}": size for p, size in listed.items()}


# --------------------------------------------------------------------------- threshold


@pytest.fixture
def many_files(home: Path, ssh_config: Path) -> Path:
    ssh_config.write_text(ssh_config.read_text() + "[sync]\nmax_files = 5\n")
    root = home / "many"
    _write(root / "pyproject.toml", "[project]\nname = 'many'\n")
    _write(root / "train.py", "print('many', flush=True)\n")
    for index in range(10):
        _write(root / "data" / f"{index}.txt", f"{index}\n")
    return root


def test_a_big_tree_needs_yes_without_a_terminal(
    cli: CLI, remote: str, sshd: object, many_files: Path
) -> None:
    done = cli("run", "--on", "testhost", "train.py", cwd=many_files)
    assert done.returncode == 2, done.stderr
    assert "refusing to send 12 files" in done.stderr and "--yes" in done.stderr
    assert _jobs(cli) == [] and _host_code(sshd, remote) == {}
    done = cli("run", "--on", "testhost", "--yes", "train.py", cwd=many_files)
    assert done.returncode == 0, done.stderr
    assert len(_host_code(sshd, remote)) == 12


def _run_on_a_terminal(args: list[str], cwd: Path, answer: bytes) -> tuple[int, str]:
    """Run runctl with stdin/stderr on a pseudo-terminal; answer its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runctl", *args], cwd=cwd, stdin=slave, stderr=slave,
        stdout=subprocess.PIPE, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(master, answer)
            answered = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=60)
    assert proc.stdout is not None
    proc.stdout.close()
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def test_a_big_tree_asks_on_a_terminal(
    cli: CLI, remote: str, sshd: object, many_files: Path
) -> None:
    code, screen = _run_on_a_terminal(["run", "--on", "testhost", "train.py"], many_files, b"n\n")
    assert "Send 12 files" in screen and code == 1, screen
    assert "cancelled: nothing was sent" in screen
    assert _jobs(cli) == [] and _host_code(sshd, remote) == {}
    code, screen = _run_on_a_terminal(["run", "--on", "testhost", "train.py"], many_files, b"y\n")
    assert code == 0, screen
    assert len(_host_code(sshd, remote)) == 12


# ------------------------------------------------------------------ selection, no host


def test_a_link_with_an_innocent_name_cannot_smuggle_a_key(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml")
    _write(tmp_path / "keys" / "deploy.pem", KEY_TEXT)
    (tmp_path / "README").symlink_to(tmp_path / "keys" / "deploy.pem")
    selection = select_files(tmp_path)
    assert selection.files == ["pyproject.toml"]
    assert selection.secrets == ["README", "keys/deploy.pem"]


def test_an_include_naming_a_key_inside_ssh_sends_only_that_key(tmp_path: Path) -> None:
    _secrets_into(tmp_path)
    _write(tmp_path / ".ssh" / "config", "Host x\n")
    assert select_files(tmp_path, ["id_ed25519"]).files == [".ssh/id_ed25519"]
    assert select_files(tmp_path, [".ssh/"]).files == [
        ".ssh/config", ".ssh/id_ed25519", ".ssh/id_ed25519.pub",
    ]  # fmt: skip
    everything = select_files(tmp_path, ["*", "**/*"])
    assert everything.files == []
    assert everything.secrets == [
        ".aws/credentials", ".bash_history", ".env", ".ssh/config", ".ssh/id_ed25519",
        ".ssh/id_ed25519.pub",
    ]  # fmt: skip


def test_gitignored_secrets_are_not_reported_again(tmp_path: Path) -> None:
    _write(tmp_path / ".gitignore", ".env\n")
    _write(tmp_path / ".env", "RED_TEAM_TOKEN=1\n")
    _write(tmp_path / "prod.key", KEY_TEXT)
    assert select_files(tmp_path) == Selection([".gitignore"], ["prod.key"])


def test_home_and_the_directories_above_it_are_never_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "users" / "me"
    _write(tmp_path / "users" / ".git" / "HEAD")  # even a repository above the home
    _write(home / ".git" / "HEAD")  # dotfiles
    _write(home / "requirements.txt")  # a stray marker
    monkeypatch.setenv("HOME", str(home))
    assert find_project(_write(home / "t.py")) == ProjectRoot(home.resolve(), "none")
    exp = home / "exp"
    assert find_project(_write(exp / "t.py")) == ProjectRoot(exp.resolve(), "none")
    _write(exp / "setup.cfg")
    assert find_project(exp / "t.py") == ProjectRoot(exp.resolve(), "marker")
