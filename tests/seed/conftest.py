"""Stands for the seed corpus: moto (+ the sshd stand as every instance), the RunPod fake."""

from tests.fakes.fixtures import runpod_fake
from tests.providers.aws.conftest import aws_ssh, moto_aws, moto_endpoint

__all__ = ["aws_ssh", "moto_aws", "moto_endpoint", "runpod_fake"]
