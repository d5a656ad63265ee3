"""Fixtures: the fake Lyceum API (loopback HTTP) and a recorded sleep."""

from tests.fakes.fixtures import lyceum_fake, sleeps

__all__ = ["lyceum_fake", "sleeps"]
