"""Real test hosts (sshd on loopback, network-namespace hosts) for integration tests."""
