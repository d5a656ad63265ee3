#!/usr/bin/env bash
# The README's first command: set up runctl in .venv and run a real training job on the
# embedded default (local provider, SQLite state), then show its status, logs and checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "==> installing runctl and torch (CPU) into .venv"
.venv/bin/pip install -q -e . 'torch==2.13.0' numpy
# An editable install is not byte-compiled; where PYTHONDONTWRITEBYTECODE is set, every runctl
# call would compile it again (~0.1 s). Compile once.
.venv/bin/python -m compileall -q src >/dev/null
R=.venv/bin/runctl
echo "==> runctl run examples/train_mnist.py --follow -- --epochs 3"
$R run --name quickstart examples/train_mnist.py --follow -- --epochs 3
JOB=$($R jobs --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["job_id"])')
echo; echo "==> runctl jobs"; $R jobs
echo; echo "==> runctl status $JOB"; $R status "$JOB"
echo; echo "==> runctl logs $JOB --tail 3"; $R logs "$JOB" --tail 3
echo; echo "==> running it again resumes from the latest checkpoint:"
$R run --name quickstart examples/train_mnist.py --follow -- --epochs 4
