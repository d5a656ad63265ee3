"""AWS test stand: a moto *server* (boto3 talks HTTP to it) with validation on, reset per test.

The AMI catalog is replaced (``MOTO_AMIS_PATH``) by a DLAMI and Amazon Linux 2023 for x86_64
and arm64. moto refuses writes under ``/aws/`` in SSM, so the tests point
``aws.gpu_ami_parameter`` / ``aws.cpu_ami_parameter`` at their own parameters. The "instance"
side (train, monitor, processes) is the loopback sshd stand, reached through the documented
``runctl:ssh-endpoint`` tag.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

AMIS = [
    ("ami-0dlami000000001", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20261101",
     "x86_64", "/dev/sda1"),
    ("ami-0dlamiarm000001", "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) "
     "20261101", "arm64", "/dev/sda1"),
    ("ami-0al2023000000001", "al2023-ami-2023.9.20261101.0-kernel-6.1-x86_64", "x86_64",
     "/dev/xvda"),
    ("ami-0al2023arm00001", "al2023-ami-2023.9.20261101.0-kernel-6.1-arm64", "arm64",
     "/dev/xvda"),
]  # fmt: skip
PARAMS = {
    "/runctl-test/dlami/x86_64": "ami-0dlami000000001",
    "/runctl-test/dlami/arm64": "ami-0dlamiarm000001",
    "/runctl-test/al2023/x86_64": "ami-0al2023000000001",
    "/runctl-test/al2023/arm64": "ami-0al2023arm00001",
}
VALIDATION_ENV = {
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}


def _catalog(path: Path) -> Path:
    rows = [
        {"ami_id": ami, "name": name, "description": name, "owner_id": "137112412989",
         "public": True, "virtualization_type": "hvm", "architecture": arch,
         "state": "available", "platform": None, "image_type": "machine", "hypervisor": "xen",
         "root_device_name": root, "root_device_type": "ebs", "sriov": "simple",
         "creation_date": "2026-11-01T00:00:00.000Z"}
        for ami, name, arch, root in AMIS
    ]  # fmt: skip
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] not installed")
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in [*VALIDATION_ENV, "MOTO_AMIS_PATH"]}
    os.environ.update(VALIDATION_ENV)
    os.environ["MOTO_AMIS_PATH"] = str(_catalog(tmp_path_factory.mktemp("moto") / "amis.json"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class MotoAWS:
    endpoint: str
    config_file: Path

    def client(self, service: str, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint)

    def configure(self, **values: Any) -> None:
        """Rewrite the [aws] section of the user config with these extra keys."""
        import tomllib

        import tomli_w

        data = tomllib.loads(self.config_file.read_text())
        data.setdefault("aws", {}).update(values)
        self.config_file.write_text(tomli_w.dumps(data))

    def instance(self, instance_id: str, region: str = "us-east-1") -> dict[str, Any]:
        found = self.client("ec2", region).describe_instances(InstanceIds=[instance_id])
        result: dict[str, Any] = found["Reservations"][0]["Instances"][0]
        return result

    def tags(self, instance_id: str, region: str = "us-east-1") -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.instance(instance_id, region).get("Tags", [])}

    def point_ssh_at(self, instance_id: str, sshd: Any) -> None:
        """Map the moto instance to the loopback sshd (the runctl:ssh-endpoint tag)."""
        self.client("ec2").create_tags(
            Resources=[instance_id],
            Tags=[{"Key": "runctl:ssh-endpoint", "Value": f"127.0.0.1:{sshd.port}"}],
        )


@pytest.fixture
def moto_aws(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MotoAWS]:
    """Fake credentials, no ~/.aws, user config pointing runctl at the moto server."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    config_file = tmp_path / "xdg-config" / "runctl" / "config.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        "[aws]\n"
        f'endpoint_url = "{moto_endpoint}"\n'
        'region = "us-east-1"\n'
        'gpu_ami_parameter = "/runctl-test/dlami/{arch}"\n'
        'cpu_ami_parameter = "/runctl-test/al2023/{arch}"\n'
        f'remote_dir = ".runctl-aws-{os.urandom(4).hex()}"\n'
        "spot_timeout_s = 30.0\n"
        # moto's made-up public IPs lead nowhere: fail job checks over ssh fast.
        "[ssh]\nconnect_timeout_s = 1\n"
    )
    stand = MotoAWS(moto_endpoint, config_file)
    for region in ("us-east-1", "us-west-2"):
        ssm = stand.client("ssm", region)
        for name, value in PARAMS.items():
            ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    yield stand
    request = urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def aws_ssh(moto_aws: MotoAWS, sshd: Any) -> MotoAWS:
    """moto plus the sshd stand: instances log in as the stand's user with its key."""
    moto_aws.configure(ssh_key_file=str(sshd.key), ssh_user=sshd.user,
                       host_cli="/opt/runctl-test-awscli/bin/aws")  # fmt: skip
    return moto_aws


@pytest.fixture
def cli_fast(moto_aws: MotoAWS) -> Any:
    """The real CLI entry point run in-process (no interpreter start or boto3 import per call);
    for non-streaming commands. Returns what ``cli`` returns."""
    import contextlib
    import io
    import subprocess

    from runctl.cli import main

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())

    return invoke


def created_id(done: Any) -> str:
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    return str(data["instance_id"])
