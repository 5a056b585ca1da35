"""The one optimizer factory, the one learning-rate schedule (with warm-up) and compilation.

Every technique that trains (train, multi-task, distillation, the unlabelled-data techniques,
compression) gets its optimizer, schedule and phase-2 learning rate from here, so a change to how
fine-tuning is optimized is made once.
"""

from __future__ import annotations

import math

from tlkeras._backend import keras
from tlkeras.config import RunConfig
from tlkeras.core.tasks import task_of_head

__all__ = [
    "make_optimizer",
    "learning_rate_schedule",
    "phase_optimizer",
    "phase2_learning_rate",
    "final_learning_rate",
    "loss_and_metrics",
    "compile_model",
    "steps_per_epoch",
    "epoch_seed",
]


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0):
    """A fresh ``train.optimizer`` (adam, adamw or sgd with momentum 0.9) at ``learning_rate``."""
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def learning_rate_schedule(lr: float, schedule: str, steps: int, warmup_steps: int = 0):
    """``lr`` as ``train.schedule`` over ``steps`` optimizer steps, after a linear warm-up.

    ``cosine`` decays to 0 after the warm-up; ``constant`` holds ``lr`` after it. One step or
    fewer gets the constant ``lr``.
    """
    warmup_steps = min(max(0, int(warmup_steps)), max(0, steps - 1))
    if (schedule == "constant" and warmup_steps == 0) or steps <= 1:
        return lr
    decay_steps = max(1, steps - warmup_steps)
    if warmup_steps:
        # CosineDecay warms up linearly from initial_learning_rate to warmup_target.
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.01, decay_steps, alpha=1.0 if schedule == "constant" else 0.0,
            warmup_target=lr, warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=0.0)


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``count`` examples (at least 1)."""
    return max(1, math.ceil(count / batch_size))


def phase2_learning_rate(config: RunConfig) -> float:
    """The fine-tuning learning rate: ``phase1_lr * phase2_lr_factor`` (the one place it is computed).

    ``phase2_lr_factor`` unset (None) means the backbone family's recipe default, which
    :func:`tlkeras.core.backbones.apply_recipe_defaults` fills in before training.
    """
    tc = config.train
    factor = tc.phase2_lr_factor if tc.phase2_lr_factor is not None else 0.1
    return float(tc.phase1_lr) * float(factor)


def final_learning_rate(config: RunConfig, fine_tuned: bool) -> float:
    """The learning rate a trained model is left compiled with (phase 2's when it ran)."""
    return phase2_learning_rate(config) if fine_tuned else float(config.train.phase1_lr)


def phase_optimizer(config: RunConfig, learning_rate: float, total_steps: int, warmup_steps: int = 0):
    """The optimizer of one phase: ``train.optimizer`` over ``train.schedule`` with warm-up."""
    tc = config.train
    lr = learning_rate_schedule(learning_rate, tc.schedule, total_steps, warmup_steps)
    return make_optimizer(tc.optimizer, lr, tc.weight_decay)


def loss_and_metrics(head: str, num_outputs: int, label_smoothing: float):
    """The loss and Keras metrics of the task a ``softmax``, ``sigmoid`` or ``regression`` head names."""
    return task_of_head(head).loss_and_metrics(num_outputs, label_smoothing)


def compile_model(model, config: RunConfig, num_outputs: int, learning_rate, jit: bool | None = None) -> None:
    """Compiles ``model`` with the loss and metrics of its head and ``learning_rate``.

    Side effect: replaces the model's optimizer (recompiling is required after changing
    ``trainable`` flags).
    """
    loss, metrics = loss_and_metrics(config.model.head, num_outputs, config.train.label_smoothing)
    model.compile(
        optimizer=make_optimizer(config.train.optimizer, learning_rate, config.train.weight_decay),
        loss=loss, metrics=metrics, jit_compile=config.train.xla if jit is None else jit,
    )


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    """The shuffle/augmentation seed of one epoch.

    It depends only on (seed, phase, epoch), so a resumed run sees the same batches as an
    uninterrupted one.
    """
    return (seed * 1_000_003 + phase * 10_007 + epoch) % (2**31 - 1)
