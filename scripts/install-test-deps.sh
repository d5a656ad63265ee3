#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine (run as root):
# system packages for the SSH / network-namespace stands, the project venv, and a torch
# interpreter the unprivileged SSH test user can run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# System packages for the stands the tests start themselves (no services are enabled):
#   sshd + rsync + nftables + iproute2: SSH hosts on loopback and in network namespaces;
#   slurm-wlm + munge: a Slurm cluster (tests/stands/slurm.py);
#   chromium: renders the `resources list --export html` page;
#   docker.io + docker-registry + debootstrap: dockerd, a registry and an offline base image;
#   zsh: the shell-completion tests source `runctl completion zsh` in a real zsh.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends \
    openssh-server openssh-client rsync nftables iproute2 util-linux python3-venv \
    slurm-wlm munge chromium docker.io docker-registry debootstrap zsh >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]' 'torch==2.13.0' numpy
# Real training frameworks for tests/frameworks (tiny CPU models, offline). The constraint keeps
# pip from replacing the CPU torch above; DS_BUILD_OPS=0: DeepSpeed compiles no ops at install.
FRAMEWORKS=('lightning==2.6.6' 'transformers==5.25.0' 'accelerate==1.16.0' 'deepspeed==0.19.8')
TORCH_PIN=$(mktemp) && echo 'torch==2.13.0' >"$TORCH_PIN"
DS_BUILD_OPS=0 .venv/bin/pip install -q -c "$TORCH_PIN" "${FRAMEWORKS[@]}"
# An editable install is not byte-compiled; where PYTHONDONTWRITEBYTECODE is set, every runctl
# call would compile it again (~0.1 s). Compile once.
.venv/bin/python -m compileall -q src >/dev/null

# The SSH stand logs in as an unprivileged user who cannot read this venv; give it its own
# interpreter with torch for the remote training test.
TORCH_VENV=/opt/runctl-test-torch
if [ "$(id -u)" = 0 ] && [ ! -x "$TORCH_VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$TORCH_VENV"
  "$TORCH_VENV/bin/pip" install -q 'torch==2.13.0' numpy
  chmod -R a+rX "$TORCH_VENV"
fi
if [ "$(id -u)" = 0 ] && [ -x "$TORCH_VENV/bin/python" ]; then  # the same frameworks over SSH
  DS_BUILD_OPS=0 "$TORCH_VENV/bin/pip" install -q -c "$TORCH_PIN" "${FRAMEWORKS[@]}"
  chmod -R a+rX "$TORCH_VENV"
fi
rm -f "$TORCH_PIN"

# `aws train --data-s3/--output-s3` tests run the AWS CLI as the SSH test user on the "host"
# (tests/providers/aws/test_train.py); it talks to the moto server on 127.0.0.1.
AWSCLI_VENV=/opt/runctl-test-awscli
if [ "$(id -u)" = 0 ] && [ ! -x "$AWSCLI_VENV/bin/aws" ]; then
  /usr/bin/python3 -m venv "$AWSCLI_VENV"
  "$AWSCLI_VENV/bin/pip" install -q awscli
  chmod -R a+rX "$AWSCLI_VENV"
fi

# Docker stand (tests/stands/docker.py): dockerd and Debian's docker-registry, started by the
# tests on loopback with their own data dirs. Images cannot be pulled here, so the base image
# is a debootstrapped Debian with python3, cached as a tarball the stand `docker import`s.
DOCKER_BASE_TAR=/var/cache/runctl-test/debian-bookworm-python3.tar
if [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
  if [ ! -s "$DOCKER_BASE_TAR" ]; then
    mkdir -p "$(dirname "$DOCKER_BASE_TAR")"
    rootfs=$(mktemp -d /var/cache/runctl-test/rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" \
      http://deb.debian.org/debian >"$rootfs.log" 2>&1
    tar -C "$rootfs" -c . >"$DOCKER_BASE_TAR.tmp" && mv "$DOCKER_BASE_TAR.tmp" "$DOCKER_BASE_TAR"
    rm -rf "$rootfs" "$rootfs.log"
  fi
fi
