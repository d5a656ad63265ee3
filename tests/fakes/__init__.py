"""Fake cloud APIs served over loopback HTTP for tests."""
