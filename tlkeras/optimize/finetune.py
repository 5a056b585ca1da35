"""The fine-tuning loop every compression stage runs (phase-2 settings of the source run).

Thin on purpose: compiling, the schedule and the optimizer come from the shared training engine
(:mod:`tlkeras.train.optim`, :mod:`tlkeras.train.phase`); what differs here is self-distillation targets, tfmot callbacks and
early stopping that waits for the pruning schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlkeras._backend import keras
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle, class_weights, make_dataset
from tlkeras.optimize.options import FineTuneOptions
from tlkeras.train.optim import compile_model, learning_rate_schedule, steps_per_epoch


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
    if w <= 0 or data.head != "softmax":
        return None
    from tlkeras.core.data import encode_labels
    from tlkeras.core.metrics import predict

    soft = predict(model, data.train.x, ft["batch_size"]).astype(np.float32)
    return (1.0 - w) * encode_labels(data.train.y, "softmax", data.num_outputs) + w * soft


def _fine_tune(model, data: DataBundle, config: RunConfig, ft: dict, *, stage: str, extra_callbacks: list, log_dir: Path | None,
               monitor_from_epoch: int = 0, targets: np.ndarray | None = None) -> dict[str, list]:
    """Compiles ``model`` with the phase-2 learning rate and fits it; returns the history.

    Early stopping watches val loss and restores the best weights, as in training; for pruning it
    only starts watching once the target sparsity is reached (``monitor_from_epoch``), so it never
    restores a less sparse model. Side effects: changes the model's weights and optimizer.
    """

    n, bs = data.num_outputs, ft["batch_size"]
    per_epoch = _steps_per_epoch(data, bs)
    warmup = int(round(ft["warmup_epochs"] * per_epoch))
    _compile(model, config, n, learning_rate_schedule(ft["learning_rate"], ft["schedule"], per_epoch * ft["epochs"], warmup))
    train_ds = make_dataset(data.train, head=data.head, num_outputs=n, batch_size=bs, shuffle=True, augment=ft["augment"], seed=config.seed,
                            targets=targets)
    val_ds = make_dataset(data.val, head=data.head, num_outputs=n, batch_size=bs)
    callbacks = list(extra_callbacks)
    patience = ft["patience"] if ft["patience"] > 0 else 10**9
    if monitor_from_epoch < ft["epochs"]:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                                       start_from_epoch=monitor_from_epoch))
    if log_dir is not None and not any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir / stage), profile_batch=0, write_graph=False))
    history = model.fit(train_ds, validation_data=val_ds, epochs=ft["epochs"], class_weight=class_weights(data, config.data.class_weight),
                        callbacks=callbacks, verbose=ft["verbose"])
    return {k: [float(v) for v in vals] for k, vals in history.history.items() if k != "lr"}


def _recompile_fresh(model, config: RunConfig, num_outputs: int, ft: dict) -> None:
    # A fresh optimizer, so the saved model.keras carries no optimizer state it will never use.
    _compile(model, config, num_outputs, ft["learning_rate"])
