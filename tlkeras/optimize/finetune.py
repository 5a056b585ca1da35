"""The fine-tuning loop every compression stage runs (phase-2 settings of the source run).

Thin on purpose: every stage fine-tunes through the shared training engine (compiling, schedule,
optimizer, per-epoch seeds, early stopping and restore-best: :func:`tlkeras.train.recipe.train_phase`);
what differs here is self-distillation targets, tfmot callbacks and selection that waits for the
pruning schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import keras
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle, class_weights, make_dataset
from tlkeras.optimize.options import FineTuneOptions
from tlkeras.train.optim import compile_model, epoch_seed, steps_per_epoch
from tlkeras.train.phase import tensorboard
from tlkeras.train.recipe import train_phase


def _stage_settings(finetune: FineTuneOptions, config: RunConfig, epochs: int | None, data: DataBundle | None = None) -> dict[str, Any]:
    counts = (len(data.train), data.num_outputs) if data is not None else (None, None)
    ft = finetune.resolve(config, *counts)
    if epochs is not None:
        ft["epochs"] = int(epochs)
    return ft


def _compile(model, config: RunConfig, num_outputs: int, learning_rate) -> None:

    # XLA off: tfmot's masks and fake-quant ops are not all XLA-compilable.
    compile_model(model, config, num_outputs, learning_rate, jit=False)


def _steps_per_epoch(data: DataBundle, batch_size: int) -> int:
    return steps_per_epoch(len(data.train), batch_size)


def _self_targets(model, data: DataBundle, ft: dict) -> np.ndarray | None:
    """The fine-tuning targets with self-distillation (None: plain labels).

    Predicts ``data.train`` with ``model`` (the stage's input, before tfmot wraps it) and mixes
    the predictions into the one-hot labels with weight ``ft["self_distill"]``.
    """
    w = ft["self_distill"]
    from tlkeras.config import TASK_OF_HEAD
    from tlkeras.core.data import encode_labels
    from tlkeras.core.metrics import predict
    from tlkeras.core.tasks import get_task

    if w <= 0 or not get_task(TASK_OF_HEAD.get(data.head, data.head)).exclusive_classes:
        return None

    soft = predict(model, data.train.x, ft["batch_size"]).astype(np.float32)
    return (1.0 - w) * encode_labels(data.train.y, data.head, data.num_outputs) + w * soft


# Each stage's own epoch seeds (training's phases use 1 and 2); progress shows them as phase 2.
_STAGE_SEED = {"prune": 11, "cluster": 12, "qat": 13}


def _fine_tune(model, data: DataBundle, config: RunConfig, ft: dict, *, stage: str, extra_callbacks: list, log_dir: Path | None,
               monitor_from_epoch: int = 0, targets: np.ndarray | None = None) -> dict[str, list]:
    """Fine-tunes ``model`` through the shared phase runner (:func:`tlkeras.train.recipe.train_phase`).

    The phase-2 learning rate and schedule, per-epoch seeds, early stopping and restore-best on
    val loss are training's; for pruning, only epochs at the target sparsity compete
    (``monitor_from_epoch``), so it never restores a less sparse model. Returns the history.

    Side effects: changes the model's weights and optimizer.
    """
    n, bs = data.num_outputs, ft["batch_size"]
    per_epoch = _steps_per_epoch(data, bs)
    stream = _STAGE_SEED.get(stage, 10)

    def make_train_ds(epoch: int):
        return make_dataset(data.train, head=data.head, num_outputs=n, batch_size=bs, shuffle=True, augment=ft["augment"],
                            seed=epoch_seed(config.seed, stream, epoch), targets=targets)

    callbacks = list(extra_callbacks)
    if log_dir is not None and not any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks):
        callbacks += tensorboard(log_dir / stage)
    result = train_phase(
        model, make_train_ds, make_dataset(data.val, head=data.head, num_outputs=n, batch_size=bs), config,
        phase=2, epochs=ft["epochs"], learning_rate=ft["learning_rate"], steps=per_epoch,
        warmup_steps=int(round(ft["warmup_epochs"] * per_epoch)), compile=lambda lr: _compile(model, config, n, lr),
        monitor="val_loss", class_weight=class_weights(data, config.data.class_weight), callbacks=callbacks,
        patience=ft["patience"], select_from_epoch=monitor_from_epoch, verbose=ft["verbose"],
    )
    return {k: list(v) for k, v in result.history.items() if k != "lr"}


def _recompile_fresh(model, config: RunConfig, num_outputs: int, ft: dict) -> None:
    # A fresh optimizer, so the saved model.keras carries no optimizer state it will never use.
    _compile(model, config, num_outputs, ft["learning_rate"])
