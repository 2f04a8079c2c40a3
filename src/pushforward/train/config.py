"""The settings of one training run: :class:`TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from pushforward.core import ConfigError, Settings, setting
from pushforward.train.device import (
    COMPILE_MODES,
    FINITE_CHECKS,
    FLUSH_EVERY,
    PRECISIONS,
    resolve_device,
)
from pushforward.train.optim import LR_SCHEDULES, OPTIMIZERS

__all__ = ["PRECISIONS", "TrainConfig", "check_batch"]


@dataclass
class TrainConfig(Settings):
    """Settings of one training run. ``batch_size=0`` is full batch; ``grad_clip=0`` is off.

    ``prefetch``, ``prefetch_depth``, ``flush_every``, ``compile`` and ``finite_checks`` change
    how fast training runs, not what it computes (``compile``: to rounding); a run stored before
    they existed takes their defaults."""

    epochs: int = setting(20, "training epochs", minimum=0)
    batch_size: int = setting(128, "minibatch size; 0 = full batch", minimum=0)
    lr: float = setting(1e-3, "learning rate", above=0)
    optimizer: str = setting("adam", "adam, adamw or sgd", choices=OPTIMIZERS, what="optimizer")
    betas: tuple[float, float] = setting(
        (0.9, 0.999), "Adam's β₁,β₂ (SGD: momentum β₁), e.g. 0.5,0.999", minimum=0, below=1
    )
    weight_decay: float = setting(0.0, "weight decay", minimum=0)
    grad_clip: float = setting(0.0, "clip gradients to this 2-norm (0 = off)", minimum=0)
    seed: int = setting(0, "the seed of every random draw of the run")
    checkpoint_every: int = setting(1, "epochs between checkpoints", minimum=1)
    snapshot_every: int = setting(
        0, "keep a fixed-seed sample set every K epochs in the run folder for `pushforward "
        "explore` (0 = off; generative models)", minimum=0,
    )  # fmt: skip
    device: str = setting(
        "auto",
        "auto (CUDA when present, else the CPU), cpu, cuda or cuda:N; config.json keeps this "
        "request and, as the run's device, where it resolved",
    )
    precision: str = setting(
        "float32", "float32, bfloat16 (matrix products) or auto (bfloat16 on CPUs with AMX)",
        choices=PRECISIONS, what="precision",
    )  # fmt: skip
    lr_schedule: str = setting(
        "constant", "constant, or cosine (down to 0 at the last step)", choices=LR_SCHEDULES,
        what="learning-rate schedule",
    )  # fmt: skip
    prefetch: bool = setting(
        True, "prepare the next batches' weight-free work (flow matching's pairing) while the "
        "current step trains, in a forked process on Linux CPUs, else on a thread (the same "
        "results; off: in line, before each step)",
    )  # fmt: skip
    prefetch_depth: int = setting(
        2, "how many steps ahead of the current one batches are prepared (with prefetch)",
        minimum=1, maximum=64,
    )  # fmt: skip
    flush_every: int = setting(
        FLUSH_EVERY, "every how many steps the optimisers' first moments too small to move a "
        "weight are set to zero before they turn subnormal, which x86 CPUs compute with slowly "
        "(0 = never)", minimum=0,
    )  # fmt: skip
    compile: str = setting(
        "auto", "capture the loss and its gradient with torch.compile: auto (reduce-overhead, "
        "CUDA graphs, on CUDA; off elsewhere), off, default or reduce-overhead; the GAN's own "
        "step stays eager", choices=COMPILE_MODES, what="compile mode",
    )  # fmt: skip
    finite_checks: str = setting(
        "auto", "when each step's terms are checked for NaN and infinity: step (before the "
        "update; one host sync a step), epoch (a flag on the device, read each epoch) or auto "
        "(step on the CPU, epoch on accelerators)", choices=FINITE_CHECKS, what="finite check",
    )  # fmt: skip

    def check(self) -> None:
        resolve_device(self.device)


def check_batch(cfg: TrainConfig, n: int) -> int:
    """Return the batch size ``cfg`` gives for n rows (n for full batch), refusing one larger
    than the data."""
    batch = n if cfg.batch_size == 0 else cfg.batch_size
    if batch > n:
        raise ConfigError(
            f"batch_size {batch} is larger than the data ({n} rows); "
            "use a smaller batch, or 0 for full batch"
        )
    return batch
