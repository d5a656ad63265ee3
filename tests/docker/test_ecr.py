"""ECR calls against moto; the login they lead to against the real loopback registry."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.providers.aws.conftest import MotoAWS, moto_aws, moto_endpoint  # noqa: F401

pytestmark = pytest.mark.integration


def _session(moto: MotoAWS) -> Any:
    from runctl.providers.aws.session import AwsSession

    return AwsSession(region="us-east-1", endpoint_url=moto.endpoint)


def test_ensure_repository_creates_once(moto_aws: MotoAWS) -> None:  # noqa: F811
    from runctl.providers.aws import ecr

    uri, created = ecr.ensure_repository(_session(moto_aws), "runctl/train")
    assert created
    assert uri == "123456789012.dkr.ecr.us-east-1.amazonaws.com/runctl/train"
    again, created = ecr.ensure_repository(_session(moto_aws), "runctl/train")
    assert (again, created) == (uri, False)
    repos = moto_aws.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["runctl/train"]


def test_invalid_repository_name_is_a_usage_error(moto_aws: MotoAWS) -> None:  # noqa: F811
    from runctl.errors import UsageError
    from runctl.providers.aws import ecr

    with pytest.raises(UsageError):
        ecr.ensure_repository(_session(moto_aws), "Bad/Name")


def test_ecr_token_logs_docker_in(
    moto_aws: MotoAWS,  # noqa: F811
    dockerd: Any,
) -> None:
    """The decoded token goes to `docker login --password-stdin` (here: the loopback registry)."""
    from runctl.core import docker
    from runctl.providers.aws import ecr

    login = ecr.registry_login(_session(moto_aws))
    assert login.registry == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert login.username == "AWS" and login.password == "123456789012-auth-token"
    assert "auth-token" not in repr(login)
    docker.login(dockerd.registry, login.username, login.password)
    config = json.loads((Path(os.environ["DOCKER_CONFIG"]) / "config.json").read_text())
    auth = config["auths"][dockerd.registry]["auth"]
    assert base64.b64decode(auth).decode() == "AWS:123456789012-auth-token"


def test_ecr_images_are_recognised_and_hosts_log_in_without_exposing_the_password() -> None:
    from runctl.cli.docker import ecr_login_command
    from runctl.core import docker

    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/proj:latest"
    assert docker.ecr_registry(image) == ("123456789012", "eu-west-1")
    assert docker.ecr_registry("127.0.0.1:5000/proj:1") is None
    assert ecr_login_command("127.0.0.1:5000/proj:1", "aws") == []
    [argv] = ecr_login_command(image, "/opt/aws/bin/aws", "http://127.0.0.1:9")
    assert argv[:2] == ["sh", "-c"] and "--password-stdin" in argv[2]
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    flags = ["--region", "eu-west-1", "--endpoint-url", "http://127.0.0.1:9"]
    assert argv[3:] == ["/opt/aws/bin/aws", registry, *flags]


def test_push_targets() -> None:
    from runctl.core import docker

    assert docker.registry_of("python:3.11") == ""
    assert docker.registry_of("localhost/x") == "localhost"
    assert docker.registry_of("127.0.0.1:5001/a/b:1") == "127.0.0.1:5001"
    assert docker.with_tag("127.0.0.1:5001/a/b:1", "2") == "127.0.0.1:5001/a/b:2"
    assert docker.with_tag("127.0.0.1:5001/a/b", "2") == "127.0.0.1:5001/a/b:2"
    assert docker.default_tag(Path("/x/My Project")) == "my-project:latest"
