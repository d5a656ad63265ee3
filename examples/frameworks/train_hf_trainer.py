"""Hugging Face Trainer on CPU with runctl: checkpoint-<step>/ directories and resume for free.

A tiny BERT built from a config (random weights, no hub download) learns random labels.
``save_steps``/``save_total_limit`` write ``checkpoint-<step>/`` into ``$RUNCTL_CHECKPOINT_DIR``;
re-running the same command resumes from the newest one. The one line that takes it::

    trainer.train(resume_from_checkpoint=os.environ.get("RUNCTL_RESUME_FROM") or None)

Prints ``STEP <global step>`` after every optimizer step and ``RESUMED <path> at step <n>``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally

import torch
from harness import hold, make_parser
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


class PrintSteps(TrainerCallback):
    def __init__(self, sleep_s: float, hold_at: int) -> None:
        self.sleep_s, self.hold_at = sleep_s, hold_at

    def on_train_begin(self, args: object, state: object, control: object, **kw: object) -> None:
        resumed = os.environ.get("RUNCTL_RESUME_FROM")
        if resumed:
            print(f"RESUMED {resumed} at step {state.global_step}", flush=True)  # type: ignore[attr-defined]

    def on_step_end(self, args: object, state: object, control: object, **kw: object) -> None:
        print(f"STEP {state.global_step}", flush=True)  # type: ignore[attr-defined]
        time.sleep(self.sleep_s)  # stands in for real work
        hold(state.global_step, self.hold_at)  # type: ignore[attr-defined]


class RandomTokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, 12), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    parser = make_parser()
    parser.add_argument("--keep", type=int, default=3, help="save_total_limit")
    args = parser.parse_args()
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    training = TrainingArguments(
        output_dir=os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints",
        max_steps=args.steps,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=args.save_every,
        save_total_limit=args.keep,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=training,
        train_dataset=RandomTokens(64),
        callbacks=[PrintSteps(args.sleep, args.hold_at)],
    )
    trainer.train(resume_from_checkpoint=os.environ.get("RUNCTL_RESUME_FROM") or None)
    print(f"DONE at step {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
