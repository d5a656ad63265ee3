"""Container images for jobs: find or generate a Dockerfile, build, tag, log in, push.

Everything here drives the local ``docker`` CLI (``DOCKER_HOST`` and the user's docker config
apply as usual). The Dockerfile is looked for in the *project root* (the directory runctl
syncs, see ``sync_select.find_project_root``), never the current directory. A project without
one gets a generated Dockerfile: ``FROM <base image>``, ``pip install -r requirements.txt``
when the project has one, the project copied to ``/workspace``. Either way the build context
is what sync would send, never the whole directory (``core/docker_context.py``).

Registry credentials go to ``docker login --password-stdin``; they are never put on a command
line or printed. ECR specifics (repository creation, the authorization token) live in
``providers/aws/ecr.py``; this module only sees a registry host, a user and a password.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runctl.core import docker_context, dockerignore
from runctl.errors import NotFoundError, RunctlError, UsageError

# Checked in this order in the project root (the seed's list, minus directories).
DOCKERFILE_NAMES = ("Dockerfile", "Dockerfile.train", "docker/Dockerfile", "src/Dockerfile")
DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOG_TAIL_LINES = 15
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class DockerError(RunctlError):
    """docker is missing, its daemon unreachable, or a docker command failed."""


@dataclass(frozen=True)
class BuildResult:
    image: str
    dockerfile: str | None  # None: generated
    generated: bool
    seconds: float


def docker_bin() -> str:
    """Path of the docker CLI; DockerError with an install hint when it is missing."""
    found = shutil.which("docker")
    if not found:
        raise DockerError(
            "docker is not installed (no `docker` on PATH)",
            hint="install Docker (https://docs.docker.com/engine/install/) or docker.io",
        )
    return found


def _run(
    argv: Sequence[str], *, what: str, stdin: str | None = None, timeout_s: float | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            [docker_bin(), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"{what}: docker did not answer in {timeout_s:.0f}s") from None
    if done.returncode != 0:
        raise _failure(what, done.stdout + done.stderr)
    return done


def _failure(what: str, output: str) -> RunctlError:
    text = output.strip()
    if "Cannot connect to the Docker daemon" in text or "docker daemon running" in text:
        return DockerError(
            f"{what}: the Docker daemon is not reachable",
            hint="start dockerd (or Docker Desktop), check DOCKER_HOST and that you may use "
            "the docker socket (docker group)",
        )
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return DockerError(f"{what} failed", hint="run the docker command by hand to see why")
    # One line of message (the last thing docker said); the lines before it as the hint.
    tail = "\n".join("  " + line for line in lines[-LOG_TAIL_LINES:])
    return DockerError(f"{what} failed: {lines[-1].strip()}", hint=f"docker output:\n{tail}")


def check_daemon() -> str:
    """The server version; DockerError when docker or its daemon is unavailable."""
    done = _run(
        ["version", "--format", "{{.Server.Version}}"], what="docker version", timeout_s=30
    )
    return done.stdout.strip()


def find_dockerfile(root: Path, explicit: str | None = None) -> Path | None:
    """The Dockerfile to build: ``explicit`` (relative to cwd) or the first known name in root."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise NotFoundError(
                f"Dockerfile not found: {explicit}", hint="give a path to an existing file"
            )
        return path.resolve()
    for name in DOCKERFILE_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def generate_dockerfile(base_image: str, files: Sequence[str]) -> str:
    """A Dockerfile for a plain Python project: base image, requirements, code in /workspace.

    ``files`` is the build context: requirements are installed when it holds them.
    """
    lines = [f"FROM {base_image}", "WORKDIR /workspace"]
    if "requirements.txt" in files:
        lines += [
            "COPY requirements.txt /tmp/runctl-requirements.txt",
            "RUN python3 -m pip install --no-cache-dir -r /tmp/runctl-requirements.txt",
        ]
    lines += ["COPY . /workspace", 'CMD ["python3"]']
    return "\n".join(lines) + "\n"


def default_tag(root: Path) -> str:
    """``<project>:latest`` with the project name made a valid repository name."""
    name = re.sub(r"[^a-z0-9._-]+", "-", root.name.lower()).strip(".-_") or "runctl-project"
    return f"{name}:latest"


def build(
    root: Path,
    tag: str,
    files: Sequence[str],
    *,
    dockerfile: str | None = None,
    base_image: str = "",
    network: str = "host",
    build_args: Sequence[str] = (),
) -> BuildResult:
    """``docker build`` the project at ``root`` as ``tag``; blocks; DockerError on failure.

    The build context is ``files`` (paths relative to ``root``: what sync selects, see
    ``core/sync_select.py``) less what the project's ``.dockerignore`` leaves out, sent to
    docker as a tar on stdin, so keys, credentials and ``.env`` files beside the code never
    reach an image that may be pushed to a registry.
    """
    import time

    started = time.monotonic()
    found = find_dockerfile(root, dockerfile)
    ignore_file = root / ".dockerignore"
    if found is None:
        text = generate_dockerfile(base_image or DEFAULT_BASE_IMAGE, files).encode()
    else:
        text = found.read_bytes()
        if Path(f"{found}.dockerignore").is_file():  # BuildKit's per-Dockerfile ignore file
            ignore_file = Path(f"{found}.dockerignore")
    context = docker_context.Context(root, files, found, text, dockerignore.read(ignore_file))
    argv = ["build", "--force-rm", "-f", context.dockerfile_name, "-t", tag]
    if network:
        argv += ["--network", network]
    for arg in build_args:
        argv += ["--build-arg", arg]
    _run_streaming([*argv, "-"], context, what=f"docker build of {tag}")
    return BuildResult(
        image=tag,
        dockerfile=None if found is None else str(found),
        generated=found is None,
        seconds=time.monotonic() - started,
    )


def _run_streaming(argv: Sequence[str], context: docker_context.Context, *, what: str) -> None:
    """Run docker with the context tar written to its stdin (by a thread: no pipe deadlock)."""
    proc = subprocess.Popen(
        [docker_bin(), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            with stdin:
                context.write(stdin)
        except BrokenPipeError:
            pass  # docker stopped reading: its own output says why
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    writer = threading.Thread(target=feed, name="runctl-docker-context", daemon=True)
    writer.start()
    output = proc.stdout.read().decode(errors="replace")
    proc.wait()
    writer.join()
    if errors:
        if isinstance(errors[0], OSError):
            raise DockerError(
                f"{what}: could not send the build context: {errors[0]}",
                hint="check that the project's files are readable",
            ) from errors[0]
        raise errors[0]
    if proc.returncode != 0:
        raise _failure(what, output)


def registry_of(image: str) -> str:
    """The registry host of an image reference ('' for Docker Hub names like ``python:3``)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return ""


def ecr_registry(image_or_host: str) -> tuple[str, str] | None:
    """(account, region) when the image lives in ECR, else None."""
    match = _ECR_HOST.match(registry_of(image_or_host) or image_or_host)
    return (match.group(1), match.group(2)) if match else None


def tag(source: str, target: str) -> None:
    if source != target:
        _run(["tag", source, target], what=f"docker tag {source} {target}")


def login(registry: str, username: str, password: str) -> None:
    """``docker login`` with the password on stdin (never on the command line)."""
    _run(
        ["login", "--username", username, "--password-stdin", registry],
        stdin=password,
        what=f"docker login {registry}",
        timeout_s=120,
    )


def push(image: str) -> str:
    """``docker push``; returns the pushed digest ('' when docker did not print one)."""
    if not registry_of(image) and "/" not in image:
        raise UsageError(
            f"{image} names no registry",
            hint="push to REGISTRY/REPO:TAG, or give --repository for ECR",
        )
    done = _run(["push", image], what=f"docker push {image}")
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", done.stdout)
    return found.group(1) if found else ""


def image_exists(image: str) -> bool:
    try:
        _run(["image", "inspect", image], what="docker image inspect", timeout_s=60)
    except DockerError:
        return False
    return True


def with_tag(image: str, new_tag: str) -> str:
    """``image`` with its tag replaced by ``new_tag`` (a digest reference is kept as is)."""
    if "@" in image:
        return image
    slash = image.rfind("/")
    colon = image.rfind(":")
    repo = image[:colon] if colon > slash else image
    return f"{repo}:{new_tag}"
