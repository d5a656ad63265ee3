"""PyTorch Lightning on CPU with runctl: ModelCheckpoint(save_last=True) and resume for free.

A tiny regression model on random data (no downloads). Checkpoints go to
``$RUNCTL_CHECKPOINT_DIR`` (``epoch=E-step=S.ckpt`` every ``--save-every`` optimizer steps, plus
``last.ckpt``); re-running the same command resumes from the newest one, because runctl puts
its path in ``RUNCTL_RESUME_FROM``. The one line that takes it::

    trainer.fit(model, data, ckpt_path=os.environ.get("RUNCTL_RESUME_FROM") or None)

Prints ``STEP <global step>`` after every optimizer step and ``RESUMED <path> at step <n>``.
"""

from __future__ import annotations

import os
import time

import lightning as L
import torch
from harness import hold, make_parser
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(L.LightningModule):
    def __init__(self, sleep_s: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
        self.sleep_s = sleep_s

    def training_step(self, batch: list[torch.Tensor], _idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss, prog_bar=True)
        time.sleep(self.sleep_s)  # stands in for real work, so a run can be cancelled midway
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class PrintSteps(L.Callback):
    def __init__(self, hold_at: int) -> None:
        self.hold_at = hold_at

    def on_train_start(self, trainer: L.Trainer, _module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            print(f"RESUMED {trainer.ckpt_path} at step {trainer.global_step}", flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, *_args: object) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        hold(trainer.global_step, self.hold_at, lambda: trainer.received_sigterm)


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 16), torch.randn(64, 1))
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints",
        every_n_train_steps=args.save_every,
        save_top_k=-1,
        save_last=True,
    )
    trainer = L.Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        accelerator="cpu",
        callbacks=[checkpoints, PrintSteps(args.hold_at)],
        logger=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(
        Regressor(args.sleep),
        DataLoader(data, batch_size=8),
        ckpt_path=os.environ.get("RUNCTL_RESUME_FROM") or None,
    )
    print(f"DONE at step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
