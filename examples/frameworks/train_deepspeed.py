"""DeepSpeed on CPU with runctl: global_step<N>/ + ``latest`` and resume for free.

A tiny MLP on random data in one process (gloo, no launcher). Every ``--save-every`` steps
``engine.save_checkpoint`` writes ``global_step<N>/`` and the ``latest`` file into
``$RUNCTL_CHECKPOINT_DIR``; re-running the same command resumes from the newest complete one:
runctl sets ``RUNCTL_RESUME_FROM`` to the directory holding ``latest`` and ``RUNCTL_RESUME_TAG``
to the tag it chose (``latest`` may name a checkpoint cut short by a crash, which runctl
skips). The one line that takes it::

    engine.load_checkpoint(os.environ["RUNCTL_RESUME_FROM"],
                           tag=os.environ.get("RUNCTL_RESUME_TAG"))  # when it is set

Prints ``STEP <global step>`` after every optimizer step.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import torch.distributed as dist
from harness import hold, make_parser
from torch import nn


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    ckpt_dir = os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints"
    # One process without the deepspeed launcher: a file store needs no free port.
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        import deepspeed

        # One process has nothing to all-reduce; without this DeepSpeed JIT-compiles its
        # shared-memory comm op on first use (about a minute on a small CPU box).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
            config={"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1},
        )
        resume = os.environ.get("RUNCTL_RESUME_FROM")
        if resume:
            engine.load_checkpoint(resume, tag=os.environ.get("RUNCTL_RESUME_TAG"))
            print(f"RESUMED {resume} at step {engine.global_steps}", flush=True)
        x, y = torch.randn(64, 16), torch.randn(64, 1)
        while engine.global_steps < args.steps:
            i = (engine.global_steps * 8) % 64
            loss = nn.functional.mse_loss(engine(x[i : i + 8]), y[i : i + 8])
            engine.backward(loss)
            engine.step()
            print(f"STEP {engine.global_steps}", flush=True)
            time.sleep(args.sleep)  # stands in for real work
            hold(engine.global_steps, args.hold_at)
            if engine.global_steps % args.save_every == 0:
                engine.save_checkpoint(ckpt_dir)  # tag: global_step<N>, and `latest`
        print(f"DONE at step {engine.global_steps}", flush=True)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
