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
last_job() { $R jobs --json --no-refresh | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["job_id"])'; }
# Run before? Its checkpoints are still there (per project and job name), so a plain rerun
# would resume at the end and train nothing: show that, then start fresh with --no-resume.
BEFORE=$($R jobs --json --no-refresh -n 100 | .venv/bin/python -c \
  'import json,sys; print(sum(j["name"] == "quickstart" for j in json.load(sys.stdin)))')
if [ "$BEFORE" != 0 ]; then
  echo "==> the quickstart ran here before: running it again resumes from its latest checkpoint"
  echo "==> runctl run --name quickstart --follow examples/train_mnist.py --epochs 4"
  $R run --name quickstart --follow examples/train_mnist.py --epochs 4
  echo; echo "==> nothing left to train; --no-resume starts a fresh run from epoch 1:"
  echo "==> runctl run --name quickstart --no-resume --follow examples/train_mnist.py --epochs 4"
  $R run --name quickstart --no-resume --follow examples/train_mnist.py --epochs 4
  JOB=$(last_job)
  echo; echo "==> runctl jobs"; $R jobs
  echo; echo "==> runctl status $JOB"; $R status "$JOB"
  echo; echo "==> runctl logs $JOB --tail 3"; $R logs "$JOB" --tail 3
  exit 0
fi
echo "==> runctl run --name quickstart --follow examples/train_mnist.py --epochs 3"
$R run --name quickstart --follow examples/train_mnist.py --epochs 3
JOB=$(last_job)
echo; echo "==> runctl jobs"; $R jobs
echo; echo "==> runctl status $JOB"; $R status "$JOB"
echo; echo "==> runctl logs $JOB --tail 3"; $R logs "$JOB" --tail 3
echo; echo "==> running it again resumes from the latest checkpoint:"
$R run --name quickstart --follow examples/train_mnist.py --epochs 4
echo; echo "(run this script again: it shows the resume, then starts fresh with --no-resume)"
