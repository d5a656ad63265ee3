"""``runctl docker``: build the project's image, push it to ECR or any registry.

Also the glue behind ``runctl run --docker/--docker-image`` and ``aws train --docker``:
``docker_request`` turns those flags into the ``SubmitRequest.docker`` the agent runs with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runctl.cli.output import emit, json_option, progress, runtime
from runctl.errors import UsageError

if TYPE_CHECKING:
    from runctl.core.sync_scope import Scope

_F = TypeVar("_F", bound=Callable[..., Any])


def _project_scope(project_dir: str | None) -> Scope:
    """The tree ``docker build`` sends: the project around DIR (default: the current one).

    Outside any project only a named ``--project-dir`` is built from, as ``--project-root``
    is for sync: the current directory might be the home directory.
    """
    from runctl.core.sync_scope import Scope
    from runctl.core.sync_select import find_project

    start = Path(project_dir) if project_dir else Path.cwd()
    if not start.is_dir():
        raise UsageError(f"not a directory: {start}")
    found = find_project(start)
    if found.kind != "none":
        return Scope(found.path, [], "project", None)
    if project_dir is None:
        raise UsageError(
            f"no project here: {found.path} and the directories above it have no .git or "
            "project marker",
            hint="give --project-dir DIR to build from that directory, or add a "
            "pyproject.toml / requirements.txt / .runctl.toml",
        )
    return Scope(found.path, [], "explicit", None)


def _build(
    scope: Scope,
    includes: Sequence[str],
    tag: str | None,
    dockerfile: str | None,
    base_image: str | None,
    build_args: tuple[str, ...],
) -> dict[str, Any]:
    """Build ``scope``'s image from exactly the files sync would send for it."""
    from runctl.core import docker, sync

    rt = runtime()
    cfg = rt.config
    root = scope.root
    image = tag or docker.default_tag(root)
    tree = sync.scan_tree(
        rt, root, includes, script=scope.script, script_only=scope.mode == "script"
    )
    progress("docker build context:" + sync.summary(tree, scope.script).removeprefix("sync:"))
    progress(f"building {image} from {root} ...")
    result = docker.build(
        root,
        image,
        sorted(tree.manifest.files),
        dockerfile=dockerfile,
        base_image=base_image or str(cfg.get("docker.base_image")),
        network=str(cfg.get("docker.network")),
        build_args=build_args,
    )
    source = result.dockerfile or "a generated Dockerfile"
    progress(f"built {image} in {result.seconds:.1f}s from {source}")
    return {
        "image": image,
        "dockerfile": result.dockerfile,
        "generated": result.generated,
        "project_root": str(root),
        "context_files": len(tree.manifest.files),
        "excluded_secrets": list(tree.secrets),
        "seconds": round(result.seconds, 2),
    }


def push_image(
    image: str,
    *,
    repository: str | None,
    registry: str | None,
    tag: str | None,
    region: str | None,
) -> dict[str, Any]:
    """Tag ``image`` for its destination, log in when it is ECR, push; returns the summary.

    Destination: ``--repository`` → ECR (created when missing); ``--registry`` → that
    registry (``host[:port][/path]``); neither → ``image`` itself names the registry.
    """
    from runctl.core import docker

    if repository and registry:
        raise UsageError("give --repository (ECR) or --registry, not both")
    name_tag = docker.with_tag(image, tag) if tag else image
    created = False
    if repository:
        session = _ecr_session(region)
        from runctl.providers.aws import ecr

        uri, created = ecr.ensure_repository(session, repository)
        if created:
            progress(f"created ECR repository {repository}")
        target = ecr.image_uri(uri, tag or _tag_of(image))
    elif registry:
        base = registry.rstrip("/").removeprefix("https://").removeprefix("http://")
        target = f"{base}/{_last_component(name_tag)}"
    else:
        target = name_tag
        if not docker.registry_of(target):
            raise UsageError(
                f"{image} names no registry",
                hint="give --repository NAME (ECR) or --registry HOST[:PORT]",
            )
    logged_in = ""
    ecr_host = docker.ecr_registry(target)
    if ecr_host is not None:
        session = _ecr_session(region or ecr_host[1])
        from runctl.providers.aws import ecr

        login = ecr.registry_login(session)
        docker.login(login.registry, login.username, login.password)
        logged_in = login.registry
        progress(f"logged in to {login.registry}")
    docker.tag(image, target)
    progress(f"pushing {target} ...")
    digest = docker.push(target)
    progress(f"pushed {target}")
    return {
        "image": target,
        "source": image,
        "digest": digest,
        "registry": docker.registry_of(target),
        "repository_created": created,
        "logged_in": logged_in,
    }


def _tag_of(image: str) -> str:
    last = _last_component(image)
    return last.rpartition(":")[2] if ":" in last else "latest"


def _last_component(image: str) -> str:
    return image.rsplit("/", 1)[-1]


def _ecr_session(region: str | None) -> Any:
    from runctl.providers.aws.session import make_session, resolve_region

    cfg = runtime().config
    return make_session(cfg, resolve_region(cfg, region))


@click.group()
def docker() -> None:
    """Build the project's image and push it to ECR or any registry.

    \b
    Examples:
      runctl docker build -t mnist:latest
      runctl docker build-push --repository mnist
      runctl run --docker --on gpu1 train.py
    """


_build_options = [
    click.option(
        "--tag", "-t", "tag", metavar="IMAGE", help="Image name:tag (default: <project>:latest)."
    ),
    click.option(
        "--dockerfile",
        "-f",
        metavar="PATH",
        help="Dockerfile (default: Dockerfile in the project root; generated if none).",
    ),
    click.option(
        "--base-image",
        metavar="IMAGE",
        help="Base of a generated Dockerfile (default: docker.base_image).",
    ),
    click.option(
        "--build-arg",
        "build_args",
        multiple=True,
        metavar="NAME=VALUE",
        help="docker build --build-arg (repeatable).",
    ),
    click.option(
        "--project-dir",
        metavar="DIR",
        help="Where the project is (default: the current directory's project root).",
    ),
    click.option(
        "--include",
        "includes",
        multiple=True,
        metavar="PATTERN",
        help="Put this ignored path in the build context too, as for sync (gitignore "
        "syntax; repeatable). Secret-looking paths need an include naming them.",
    ),
]

_push_options = [
    click.option("--repository", metavar="NAME", help="ECR repository (created when missing)."),
    click.option("--registry", metavar="HOST[:PORT][/PATH]", help="Any other registry."),
    click.option("--region", help="AWS region of the ECR registry."),
]


def _apply(options: list[Any]) -> Callable[[_F], _F]:
    def deco(fn: _F) -> _F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return deco


@docker.command(name="build")
@_apply(_build_options)
@click.option(
    "--push",
    "push_",
    is_flag=True,
    help="Push after building (--repository or --registry, or a registry in --tag).",
)
@_apply(_push_options)
@json_option
def docker_build(
    tag: str | None,
    dockerfile: str | None,
    base_image: str | None,
    build_args: tuple[str, ...],
    project_dir: str | None,
    includes: tuple[str, ...],
    push_: bool,
    repository: str | None,
    registry: str | None,
    region: str | None,
) -> None:
    """Build the project's image (its Dockerfile, or a generated one).

    The build context is what sync would send: ignored files and secret-looking paths
    (keys, credentials, .env) stay out unless --include brings them; .dockerignore applies
    on top.

    \b
    Examples:
      runctl docker build
      runctl docker build -t mnist:dev --base-image pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime
    """
    if (repository or registry) and not push_:
        raise UsageError("--repository/--registry only apply with --push")
    scope = _project_scope(project_dir)
    data = _build(scope, includes, tag, dockerfile, base_image, build_args)
    if push_:
        data["push"] = push_image(
            data["image"], repository=repository, registry=registry, tag=None, region=region
        )
    emit(data, lambda: click.echo(data.get("push", data)["image"]))


@docker.command(name="push")
@click.argument("image")
@click.option("--tag", "tag", metavar="TAG", help="Push under this tag (default: IMAGE's).")
@_apply(_push_options)
@json_option
def docker_push(
    image: str, tag: str | None, repository: str | None, registry: str | None, region: str | None
) -> None:
    """Push local IMAGE to ECR (--repository), a registry (--registry) or where it names.

    \b
    Examples:
      runctl docker push mnist:latest --repository mnist
      runctl docker push mnist:latest --registry ghcr.io/alice
    """
    data = push_image(image, repository=repository, registry=registry, tag=tag, region=region)
    emit(data, lambda: click.echo(data["image"]))


@docker.command(name="build-push")
@_apply(_build_options)
@_apply(_push_options)
@json_option
def docker_build_push(
    tag: str | None,
    dockerfile: str | None,
    base_image: str | None,
    build_args: tuple[str, ...],
    project_dir: str | None,
    includes: tuple[str, ...],
    repository: str | None,
    registry: str | None,
    region: str | None,
) -> None:
    """Build the project's image and push it (ECR repository created when missing).

    \b
    Examples:
      runctl docker build-push --repository mnist
      runctl docker build-push --registry ghcr.io/alice
    """
    if not repository and not registry and not (tag and "/" in tag):
        raise UsageError(
            "where to push?", hint="give --repository NAME (ECR) or --registry HOST[:PORT]"
        )
    data = _build(_project_scope(project_dir), includes, tag, dockerfile, base_image, build_args)
    data["push"] = push_image(
        data["image"], repository=repository, registry=registry, tag=None, region=region
    )
    emit(data, lambda: click.echo(data["push"]["image"]))


def docker_request(
    opts: dict[str, Any],
    *,
    is_local: bool,
    argv: Sequence[str],
    kind: str = "script",
    includes: Sequence[str] = (),
    repository: str | None = None,
    region: str | None = None,
) -> dict[str, Any] | None:
    """``SubmitRequest.docker`` for --docker/--docker-image; None when neither is given.

    ``--docker`` alone builds the project's image here, from the files the job's sync sends
    (``argv``'s scope, ``includes``, ``opts["project_root"]``); a remote host then needs it
    pushed: to ECR ``repository`` (aws train) or the ``docker.registry`` config key.
    """
    image = opts.get("docker_image")
    if not image and not opts.get("docker"):
        return None
    cfg = runtime().config
    gpus = str(cfg.get("docker.gpus"))
    if gpus not in ("auto", "all", "none"):
        from runctl.errors import ConfigError

        raise ConfigError(f"docker.gpus is {gpus!r}", hint="use auto, all or none")
    if not image:
        from runctl.core.sync_scope import scope_of

        scope = scope_of(argv, kind, opts.get("project_root"))
        data = _build(scope, includes, None, None, None, ())
        image = data["image"]
        if not is_local:
            registry = str(cfg.get("docker.registry")) or None
            if not repository and not registry:
                raise UsageError(
                    "--docker on a remote host needs a registry to pull the image from",
                    hint="set `runctl config set docker.registry HOST[:PORT]`, or push it "
                    "yourself and pass --docker-image",
                )
            image = push_image(
                image,
                repository=repository,
                registry=None if repository else registry,
                tag=None,
                region=region,
            )["image"]
    return {
        "image": image,
        "network": str(cfg.get("docker.network")),
        "gpus": gpus,
    }


def ecr_login_command(image: str, host_cli: str, endpoint: str = "") -> list[list[str]]:
    """Agent pre-step logging the host's docker in to ECR (the instance role's credentials).

    Empty for images outside ECR. The password goes from the AWS CLI to docker through a
    pipe, never onto a command line.
    """
    from runctl.core import docker
    from runctl.core.hoststeps import cli_flags

    found = docker.ecr_registry(image)
    if found is None:
        return []
    script = (
        'r=$1; shift; "$0" ecr get-login-password "$@" | '
        'docker login --username AWS --password-stdin "$r"'
    )
    flags = cli_flags(found[1], endpoint)
    return [["sh", "-c", script, host_cli, docker.registry_of(image), *flags]]
