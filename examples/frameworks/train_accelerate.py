"""Hugging Face Accelerate on CPU with runctl: save_state/load_state and resume for free.

A tiny MLP on random data. Every ``--save-every`` steps ``accelerator.save_state()`` writes
``checkpoint_<step>/`` under ``$RUNCTL_CHECKPOINT_DIR``; re-running the same command resumes
from the newest one. The one line that takes it::

    accelerator.load_state(os.environ["RUNCTL_RESUME_FROM"])  # when it is set

The step counter is saved with the state (``register_for_checkpointing``), so the loop knows
where it is. Prints ``STEP <global step>`` after every optimizer step.
"""

from __future__ import annotations

import os
import time

import torch
from accelerate import Accelerator
from harness import hold, make_parser
from torch import nn


class StepCounter:
    """The loop position, saved and restored with the rest of the state."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    ckpt_dir = os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    counter = StepCounter()
    accelerator.register_for_checkpointing(counter)
    resume = os.environ.get("RUNCTL_RESUME_FROM")
    if resume:
        accelerator.load_state(resume)
        print(f"RESUMED {resume} at step {counter.step}", flush=True)
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    while counter.step < args.steps:
        i = (counter.step * 8) % 64
        loss = nn.functional.mse_loss(model(x[i : i + 8]), y[i : i + 8])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        counter.step += 1
        print(f"STEP {counter.step}", flush=True)
        time.sleep(args.sleep)  # stands in for real work
        hold(counter.step, args.hold_at)
        if counter.step % args.save_every == 0:
            accelerator.save_state(os.path.join(ckpt_dir, f"checkpoint_{counter.step}"))
    print(f"DONE at step {counter.step}", flush=True)


if __name__ == "__main__":
    main()
