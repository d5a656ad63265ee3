"""Train a small MLP on synthetic MNIST-like data (CPU, no downloads).

This is the example job used by runctl's README and test-suite. It behaves like a
real training script:

* deterministic synthetic data: 1x28x28 images built from per-class prototypes plus
  noise, so the labels are learnable but not trivially so;
* an MLP 784-256-10 trained with Adam on CPU (``torch.set_num_threads(2)``);
* a checkpoint per epoch in ``$RUNCTL_CHECKPOINT_DIR`` (fallback ``./checkpoints``),
  named ``ckpt_epoch_<NNNN>.pt`` with a ``.json`` sidecar; only the newest 3 are kept;
  files are written atomically (temporary file + ``os.replace``);
* resume from ``--resume PATH`` or ``$RUNCTL_RESUME_FROM``;
* final metrics in ``$RUNCTL_OUTPUT_DIR/metrics.json`` (fallback ``./outputs``);
* SIGTERM: finish the current batch, make sure the last completed epoch is
  checkpointed, print ``received SIGTERM, checkpoint saved`` and exit 143.

Log lines (stdout, flushed)::

    RUNCTL_JOB_ID=<id>                                   (only if the env var is set)
    resumed from <path> at epoch <E>                      (only when resuming)
    epoch <E>/<N> loss=<x.xxxx> acc=<0.xxxx> time=<s.ss>s
    saved <path>
    done: epochs=<N> final_acc=<0.xxxx>

Test hooks: ``--sleep-per-epoch S`` slows each epoch down, ``--fail-at-epoch N``
exits with code 3 right after epoch N has been checkpointed.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

# Install the SIGTERM handler before the (slow) torch import, so that a job stopped
# during start-up still exits through our handler with code 143.
_STOP_REQUESTED = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _STOP_REQUESTED
    _STOP_REQUESTED = True


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)

import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

EXIT_SIGTERM = 143
EXIT_REQUESTED_FAILURE = 3
KEEP_CHECKPOINTS = 3
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
CKPT_RE = re.compile(r"^ckpt_epoch_(\d+)\.pt$")


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- data


def make_dataset(
    n_samples: int, seed: int, n_eval: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (x_train, y_train, x_eval, y_eval); deterministic for a given seed.

    Each class has a smooth 28x28 prototype (a random 7x7 grid upsampled). A sample is
    its class prototype with a random brightness, a small random shift and pixel
    noise, clipped to [0, 1] like MNIST intensities.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(NUM_CLASSES, 1, 7, 7, generator=gen)
    protos = nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear")
    protos = (protos - protos.mean(dim=(2, 3), keepdim=True)) * 2.0 + 0.5

    total = n_samples + n_eval
    labels = torch.randint(0, NUM_CLASSES, (total,), generator=gen)
    images = protos[labels]
    images = images * (0.6 + 0.8 * torch.rand(total, 1, 1, 1, generator=gen))
    shifts = torch.randint(-2, 3, (total, 2), generator=gen)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            mask = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if mask.any():
                images[mask] = torch.roll(images[mask], shifts=(dy, dx), dims=(2, 3))
    images = images + 1.3 * torch.randn(images.shape, generator=gen)
    images = images.clamp_(0.0, 1.0).reshape(total, *IMAGE_SHAPE)
    return images[:n_samples], labels[:n_samples], images[n_samples:], labels[n_samples:]


# -------------------------------------------------------------------------- model


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 256),
        nn.ReLU(),
        nn.Linear(256, NUM_CLASSES),
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return 0.0
    model.eval()
    correct = 0
    for i in range(0, len(y), 1024):
        logits = model(x[i : i + 1024])
        correct += int((logits.argmax(dim=1) == y[i : i + 1024]).sum())
    model.train()
    return correct / len(y)


# -------------------------------------------------------------------- checkpoints


def checkpoint_dir() -> Path:
    return Path(os.environ.get("RUNCTL_CHECKPOINT_DIR") or "checkpoints")


def output_dir() -> Path:
    return Path(os.environ.get("RUNCTL_OUTPUT_DIR") or "outputs")


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then atomically move the result to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    _atomic_write(path, write)


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Save ``state`` as ckpt_epoch_<NNNN>.pt (+ .json sidecar) and prune old ones."""
    epoch = int(state["epoch"])
    path = ckpt_dir / f"ckpt_epoch_{epoch:04d}.pt"
    _atomic_write(path, lambda tmp: torch.save(state, tmp))
    meta = {k: state[k] for k in ("epoch", "step", "loss", "accuracy")}
    _write_json(path.with_suffix(".json"), meta)
    log(f"saved {path}")
    prune_checkpoints(ckpt_dir)
    return path


def prune_checkpoints(ckpt_dir: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    found: list[tuple[int, Path]] = []
    for entry in ckpt_dir.iterdir():
        match = CKPT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    found.sort()
    for _, old in found[:-keep] if keep > 0 else found:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def snapshot(
    epoch: int,
    step: int,
    loss: float,
    accuracy: float,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle_gen: torch.Generator,
) -> dict[str, Any]:
    """A weights_only-loadable copy of the training state (tensors/ints/floats/dicts)."""
    return {
        "epoch": epoch,
        "step": step,
        "loss": float(loss),
        "accuracy": float(accuracy),
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle_gen.get_state(),
        },
    }


def resolve_resume_path(cli_value: str | None) -> Path | None:
    if cli_value:
        path = Path(cli_value)
        if not path.is_file():
            print(f"error: --resume checkpoint not found: {path}", file=sys.stderr, flush=True)
            sys.exit(2)
        return path
    env_value = os.environ.get("RUNCTL_RESUME_FROM", "").strip()
    if not env_value:
        return None
    path = Path(env_value)
    if not path.is_file():
        print(
            f"warning: RUNCTL_RESUME_FROM={env_value} does not exist; starting from scratch",
            file=sys.stderr,
            flush=True,
        )
        return None
    return path


# ----------------------------------------------------------------------- training


def interruptible_sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _STOP_REQUESTED:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(0.05, remaining))


def stop_on_sigterm(ckpt_dir: Path, pending: dict[str, Any] | None) -> None:
    """Checkpoint the last completed epoch if it is not on disk yet, then exit 143."""
    if pending is not None:
        save_checkpoint(ckpt_dir, pending)
    log("received SIGTERM, checkpoint saved")
    sys.exit(EXIT_SIGTERM)


def train(args: argparse.Namespace) -> int:
    if _is_main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    job_id = os.environ.get("RUNCTL_JOB_ID")
    if job_id:
        log(f"RUNCTL_JOB_ID={job_id}")

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    ckpt_dir = checkpoint_dir()
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    n_eval = max(args.samples // 4, 1)
    x_train, y_train, x_eval, y_eval = make_dataset(args.samples, args.seed, n_eval)

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    shuffle_gen = torch.Generator().manual_seed(args.seed + 1)

    start_epoch, step, loss_value, accuracy = 0, 0, float("nan"), 0.0
    resume_path = resolve_resume_path(args.resume)
    if resume_path is not None:
        state = torch.load(resume_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        shuffle_gen.set_state(state["rng"]["shuffle"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        loss_value, accuracy = float(state["loss"]), float(state["accuracy"])
        log(f"resumed from {resume_path} at epoch {start_epoch}")
        if start_epoch >= args.epochs:
            log(f"nothing to do: already trained {start_epoch} epochs")
            return 0

    # The last completed epoch's state when it is not on disk yet (only possible before
    # the first epoch of a fresh run): saved as epoch 0 if SIGTERM arrives then.
    pending: dict[str, Any] | None = None
    if resume_path is None:
        pending = snapshot(0, 0, loss_value, accuracy, model, optimizer, shuffle_gen)

    history: list[dict[str, Any]] = []
    run_started = time.monotonic()
    n = len(y_train)
    for epoch in range(start_epoch + 1, args.epochs + 1):
        t0 = time.monotonic()
        order = torch.randperm(n, generator=shuffle_gen)
        total_loss, seen = 0.0, 0
        for i in range(0, n, args.batch_size):
            if _STOP_REQUESTED:
                stop_on_sigterm(ckpt_dir, pending)
            idx = order[i : i + args.batch_size]
            logits = model(x_train[idx])
            loss = loss_fn(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total_loss += loss.item() * len(idx)
            seen += len(idx)
        loss_value = total_loss / max(seen, 1)
        accuracy = evaluate(model, x_eval, y_eval)
        elapsed = time.monotonic() - t0
        log(
            f"epoch {epoch}/{args.epochs} loss={loss_value:.4f} acc={accuracy:.4f} "
            f"time={elapsed:.2f}s"
        )
        history.append(
            {"epoch": epoch, "loss": loss_value, "accuracy": accuracy, "time_s": elapsed}
        )
        state = snapshot(epoch, step, loss_value, accuracy, model, optimizer, shuffle_gen)
        save_checkpoint(ckpt_dir, state)
        pending = None

        if args.fail_at_epoch is not None and epoch == args.fail_at_epoch:
            print(
                f"failing after epoch {epoch} as requested (--fail-at-epoch)",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_REQUESTED_FAILURE
        if args.sleep_per_epoch > 0:
            interruptible_sleep(args.sleep_per_epoch)
        if _STOP_REQUESTED:
            stop_on_sigterm(ckpt_dir, pending)

    metrics = {
        "epochs": args.epochs,
        "start_epoch": start_epoch,
        "step": step,
        "final_loss": None if loss_value != loss_value else loss_value,
        "final_accuracy": accuracy,
        "samples": args.samples,
        "seed": args.seed,
        "resumed_from": str(resume_path) if resume_path else None,
        "history": history,
        "train_time_s": time.monotonic() - run_started,
    }
    metrics_path = output_dir() / "metrics.json"
    _write_json(metrics_path, metrics)
    log(f"wrote {metrics_path}")
    log(f"done: epochs={args.epochs} final_acc={accuracy:.4f}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=8000, help="training samples")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sleep-per-epoch", type=float, default=0.0, help="seconds to sleep after each epoch"
    )
    parser.add_argument(
        "--fail-at-epoch", type=int, default=None, help="exit with code 3 after epoch N"
    )
    parser.add_argument(
        "--resume", default=None, help="checkpoint to resume from (overrides RUNCTL_RESUME_FROM)"
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.epochs < 0 or args.batch_size < 1:
        parser.error("--samples and --batch-size must be >= 1, --epochs >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
