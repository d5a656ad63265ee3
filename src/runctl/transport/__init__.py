"""Transports: how runctl acts on a host (local subprocess, OpenSSH, later SSM)."""
