"""Write checkpoints as the real frameworks do, into OUT/<framework>/ (run as a script).

Lightning, HF Trainer, Accelerate and torch DCP run for real (tiny CPU models, random
weights, offline); a framework that is not installed is left out. DeepSpeed (its engine
needs an accelerator) and Orbax (JAX) are written by hand after their documented layouts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn


def lightning(out: Path) -> None:
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)

        def training_step(self, batch: list[torch.Tensor], _index: int) -> torch.Tensor:
            x, y = batch
            loss: torch.Tensor = ((self.layer(x) - y) ** 2).mean()
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    saver = pl.callbacks.ModelCheckpoint(
        dirpath=out, every_n_train_steps=2, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(max_steps=6, callbacks=[saver], logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))


def hf(out: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, max_position_embeddings=16)  # fmt: skip

    class Data(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.randint(0, 50, (8,)), "labels": torch.tensor(i % 2)}

    args = TrainingArguments(output_dir=str(out), max_steps=6, save_steps=2, save_total_limit=5,
                             per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             disable_tqdm=True, logging_steps=1)  # fmt: skip
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Data())
    trainer.train()
    time.sleep(0.05)
    trainer.save_model()  # the final model beside the checkpoints, as scripts usually do


def accelerate(out: Path) -> None:
    from accelerate import Accelerator  # type: ignore[import-untyped]
    from accelerate.utils import ProjectConfiguration  # type: ignore[import-untyped]

    project = ProjectConfiguration(project_dir=str(out), automatic_checkpoint_naming=True)
    accelerator = Accelerator(project_config=project, cpu=True)
    model = nn.Linear(4, 1)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for _ in range(3):
        accelerator.save_state()


def dcp(out: Path) -> None:
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    for step in (10, 20):
        state = {"model": nn.Linear(4, 1).state_dict(), "step": step}
        dcp_save(state, checkpoint_id=str(out / f"step_{step}"))


def deepspeed(out: Path) -> None:
    """engine.save_checkpoint(out): global_step<N>/ per save, then `latest` names it."""
    for step in (2, 4, 6):
        tag = out / f"global_step{step}"
        tag.mkdir(parents=True)
        torch.save({"module": nn.Linear(4, 1).state_dict(), "global_steps": step},
                   tag / "mp_rank_00_model_states.pt")  # fmt: skip
        if step == 6:
            break  # crashed while writing: no optimizer states, `latest` not moved on
        torch.save({"optimizer_state_dict": {}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        (out / "latest").write_text(f"global_step{step}")
    (out / "zero_to_fp32.py").write_text("# DeepSpeed's conversion script\n")


def orbax(out: Path) -> None:
    """CheckpointManager: <step>/ (written as <step>.orbax-checkpoint-tmp-<ts>, then renamed)."""
    for name in ("100", "200", "300.orbax-checkpoint-tmp-1712345678"):
        (out / name / "default").mkdir(parents=True)
        (out / name / "default" / "array_metadatas").write_bytes(b"\0" * 64)
        if "tmp" not in name:
            (out / name / "_CHECKPOINT_METADATA").write_text(json.dumps({"init_timestamp": 1}))


def plain(out: Path) -> None:
    out.mkdir(parents=True)
    for step in (1, 2, 3):
        torch.save({"model": nn.Linear(4, 1).state_dict(), "step": step},
                   out / f"step_{step:04d}.pt")  # fmt: skip
        time.sleep(0.02)
    torch.save({"model": nn.Linear(4, 1).state_dict(), "epoch": 1}, out / "best.pt")
    torch.save({"model": nn.Linear(4, 1).state_dict()}, out / "final_checkpoint.pt")


def main() -> None:
    out = Path(sys.argv[1])
    for make in (plain, deepspeed, orbax, dcp, accelerate, lightning, hf):
        try:
            make(out / make.__name__)
        except ImportError as exc:
            print(f"skipped {make.__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
