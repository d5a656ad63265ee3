"""torch.distributed.checkpoint (DCP) on CPU with runctl: one process, resume for free.

A tiny MLP on random data. Every ``--save-every`` steps ``dcp.save`` writes a directory
``step_<n>/`` (with its ``.metadata``) under ``$RUNCTL_CHECKPOINT_DIR``; re-running the same
command resumes from the newest one. The one line that takes it::

    dcp.load(state, checkpoint_id=os.environ["RUNCTL_RESUME_FROM"])  # when it is set

DCP needs no process group for a single process. Prints ``STEP <n>`` after every optimizer step.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from harness import hold, make_parser
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    ckpt_dir = os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = 0
    resume = os.environ.get("RUNCTL_RESUME_FROM")
    if resume:
        model_state, optim_state = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": model_state, "optim": optim_state, "step": 0}
        dcp.load(state, checkpoint_id=resume)
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])  # fmt: skip
        step = int(state["step"])
        print(f"RESUMED {resume} at step {step}", flush=True)
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    while step < args.steps:
        i = (step * 8) % 64
        loss = nn.functional.mse_loss(model(x[i : i + 8]), y[i : i + 8])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        print(f"STEP {step}", flush=True)
        time.sleep(args.sleep)  # stands in for real work
        hold(step, args.hold_at)
        if step % args.save_every == 0:
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state, "step": step},
                     checkpoint_id=os.path.join(ckpt_dir, f"step_{step}"))  # fmt: skip
    print(f"DONE at step {step}", flush=True)


if __name__ == "__main__":
    main()
