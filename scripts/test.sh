#!/usr/bin/env bash
# The README's second command: install test dependencies, then lint, type-check and run the
# whole suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
# Three workers on two cores: most tests wait on sshd, moto, SeaweedFS or torch start-up.
# Tests sharing a machine-wide stand (fixed netns hosts, Slurm, dockerd) stay on one worker
# (the scheduler in tests/conftest.py). Pass -n 0 to run serially.
.venv/bin/python -m pytest -n "${RUNCTL_TEST_WORKERS:-3}" --dist loadgroup "$@"
