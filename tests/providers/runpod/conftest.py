"""Fixtures: the fake RunPod API (loopback HTTP) and a recorded sleep."""

from tests.fakes.fixtures import runpod_fake, sleeps

__all__ = ["runpod_fake", "sleeps"]
