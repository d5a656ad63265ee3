"""Amazon ECR: repository URIs, creating a repository when missing, registry credentials.

The push itself is plain ``docker push`` (core/docker.py); this module makes the calls only
AWS can answer: ``DescribeRepositories``/``CreateRepository`` and ``GetAuthorizationToken``,
whose base64 ``user:password`` token becomes a ``docker login`` on the registry host.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from runctl.errors import AuthError, UsageError
from runctl.providers.aws.session import AwsSession, aws_errors, error_code


@dataclass(frozen=True)
class RegistryLogin:
    registry: str  # host name, without https://
    username: str
    password: str

    def __repr__(self) -> str:  # the password must never reach a log or traceback
        return f"RegistryLogin(registry={self.registry!r}, username={self.username!r})"


def ensure_repository(session: AwsSession, name: str) -> tuple[str, bool]:
    """The repository's URI, creating it when missing; returns (uri, created). Idempotent."""
    if not name or name != name.lower() or name.startswith("/"):
        raise UsageError(f"invalid ECR repository name {name!r}",
                         hint="use lowercase letters, digits, '-', '_', '.', '/'")  # fmt: skip
    ecr = session.client("ecr")
    with aws_errors(f"describe ECR repository {name}"):
        try:
            found = ecr.describe_repositories(repositoryNames=[name])["repositories"]
            return str(found[0]["repositoryUri"]), False
        except Exception as exc:  # only "not found" is handled here
            if error_code(exc) != "RepositoryNotFoundException":
                raise
    with aws_errors(f"create ECR repository {name}"):
        created = ecr.create_repository(
            repositoryName=name,
            tags=[{"Key": "runctl", "Value": "true"}],
            imageScanningConfiguration={"scanOnPush": False},
        )
    return str(created["repository"]["repositoryUri"]), True


def registry_login(session: AwsSession) -> RegistryLogin:
    """Credentials for ``docker login`` from ECR's authorization token (valid ~12 hours)."""
    with aws_errors("get ECR authorization token"):
        data = session.client("ecr").get_authorization_token()["authorizationData"]
    if not data:
        raise AuthError("ECR returned no authorization token",
                        hint="check the IAM permission ecr:GetAuthorizationToken")  # fmt: skip
    token = base64.b64decode(data[0]["authorizationToken"]).decode()
    username, _, password = token.partition(":")
    endpoint = str(data[0]["proxyEndpoint"])
    registry = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
    return RegistryLogin(registry=registry, username=username, password=password)


def image_uri(repository_uri: str, tag: str) -> str:
    return f"{repository_uri}:{tag}"
