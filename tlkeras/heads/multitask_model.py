"""The multi-task model: one shared backbone, one named head per task, and the loss weighting.

The total loss is ``sum_i w_i * L_i``. The weights are fixed (``TaskSpec.weight``) or learned by
homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018):
``sum_i c_i * exp(-s_i) * L_i + s_i / 2`` with one trainable ``s_i = log sigma_i^2`` per task
(``c_i`` = 1 for classification, 1/2 for regression), held by the :class:`UncertaintyWeighting`
layer so the values are saved with the model.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.config import ModelConfig
from tlkeras.errors import TLKerasError
from tlkeras.heads.multitask_data import TaskSpec, check_tasks, task_of_kind, task_of_spec

# c_i of the uncertainty weighting by task: a Gaussian likelihood halves the squared error.
_LIKELIHOOD_COEFFICIENT = {"regression": 0.5}

__all__ = ["WEIGHTINGS", "UncertaintyWeighting", "build_multitask_model", "compile_multitask", "loss_weights", "weighting_layer"]

WEIGHTINGS = ("fixed", "uncertainty")


@keras.saving.register_keras_serializable(package="tlkeras")
class UncertaintyWeighting(keras.layers.Layer):
    """Holds one trainable log-variance ``s_i`` per task for uncertainty loss weighting.

    The layer passes its input through unchanged (so it costs nothing at inference and vanishes
    from the TFLite graph); it sits in the model only so that ``s`` is trained by the model's
    optimizer and saved in ``model.keras``. The losses of :func:`compile_multitask` read it: task
    ``i`` contributes ``c_i * exp(-s_i) * L_i + s_i / 2`` (Kendall et al. 2018, with ``c_i`` = 1
    for classification and 1/2 for a Gaussian regression likelihood).

    Args:
        task_names: the tasks, in order.
        kinds: their head kinds (``softmax``/``sigmoid``/``regression``).
    """

    def __init__(self, task_names: Sequence[str], kinds: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.task_names = list(task_names)
        self.kinds = list(kinds)
        if len(self.task_names) != len(self.kinds):
            raise TLKerasError("UncertaintyWeighting needs one kind per task")

    def build(self, input_shape):
        self.log_vars = self.add_weight(name="log_vars", shape=(len(self.task_names),), initializer="zeros",
                                        trainable=True, dtype="float32")
        super().build(input_shape)

    def call(self, inputs):
        return inputs

    def coefficient(self, index: int) -> float:
        """c_i of the task: 1/2 for a Gaussian likelihood (regression), 1 for the classifiers."""
        return _LIKELIHOOD_COEFFICIENT.get(task_of_kind(self.kinds[index]).name, 1.0)

    def weighted(self, index: int, loss):
        """The uncertainty-weighted value of task ``index``'s (per-sample) ``loss``."""
        s = tf.cast(self.log_vars[index], loss.dtype)
        return self.coefficient(index) * tf.exp(-s) * loss + 0.5 * s

    def effective_weights(self) -> dict[str, float]:
        """``{task: c_i * exp(-s_i)}``: the weight each task's loss currently gets."""
        s = self.log_vars.numpy()
        return {n: float(self.coefficient(i) * np.exp(-s[i])) for i, n in enumerate(self.task_names)}

    def get_config(self):
        return {**super().get_config(), "task_names": self.task_names, "kinds": self.kinds}


class _UncertaintyLoss(keras.losses.Loss):
    """A task loss scaled by the task's learned uncertainty (training only; never saved)."""

    def __init__(self, base: keras.losses.Loss, weighting: UncertaintyWeighting, index: int, name: str):
        super().__init__(name=name)
        self.base = base
        self.weighting = weighting
        self.index = index

    def call(self, y_true, y_pred):
        return self.weighting.weighted(self.index, self.base.fn(y_true, y_pred, **self.base._fn_kwargs))


def build_multitask_model(model_cfg: ModelConfig, tasks: Sequence[TaskSpec], image_size: int | None = None,
                          weighting: str = "fixed") -> keras.Model:
    """Builds a shared backbone with one head per task, as one flat functional model.

    The backbone, its preprocessing and ``head_pool`` come from :func:`tlkeras.build_model`;
    each task gets ``head_<task>_hidden_i`` (``model_cfg.hidden_units``), ``head_<task>_dropout``
    (``model_cfg.dropout``), ``head_<task>_dense`` and ``head_<task>_output``. The model maps raw
    pixels to ``{task: probabilities or values}``. The backbone starts frozen.

    Args:
        model_cfg: backbone, weights, alpha, dropout, hidden units (``head`` is ignored).
        tasks: the tasks, with ``labels`` filled in.
        image_size: square input size (None: the backbone's default).
        weighting: ``fixed`` or ``uncertainty`` (adds the :class:`UncertaintyWeighting` layer
            ``head_uncertainty``).

    Raises:
        TLKerasError: bad tasks or weighting, and everything :func:`tlkeras.build_model` raises.
    """
    from tlkeras.core.models import build_model, freeze_backbone, head_dropout

    tasks = check_tasks(tasks)
    if weighting not in WEIGHTINGS:
        raise TLKerasError(f"weighting={weighting!r} is not valid; choose one of {', '.join(WEIGHTINGS)}")
    for t in tasks:
        if t.num_outputs < 1:
            raise TLKerasError(f"task {t.name} has no labels; fill TaskSpec.labels or build from data")
    dropout = head_dropout(model_cfg)
    base = build_model(replace(model_cfg, head="softmax", dropout=0.0, hidden_units=[]), 2, image_size)
    features = base.get_layer("head_pool").output
    if weighting == "uncertainty":
        features = UncertaintyWeighting([t.name for t in tasks], [t.kind for t in tasks], name="head_uncertainty")(features)
    outputs = {}
    for t in tasks:
        y = features
        for i, units in enumerate(model_cfg.hidden_units):
            y = keras.layers.Dense(int(units), activation="relu", name=f"head_{t.name}_hidden_{i}")(y)
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name=f"head_{t.name}_dropout")(y)
        y = keras.layers.Dense(t.num_outputs, name=f"head_{t.name}_dense")(y)
        activation = task_of_spec(t).activation()
        outputs[t.name] = keras.layers.Activation(activation, dtype="float32", name=f"head_{t.name}_output")(y)
    backbone = model_cfg.backbone.replace("hub:", "hub_").split("/")[-1]
    model = keras.Model(base.inputs, outputs, name=f"tlkeras_multitask_{re.sub(r'[^A-Za-z0-9_]', '_', backbone)}")
    freeze_backbone(model)
    return model


def _task_loss(task: TaskSpec, label_smoothing: float):
    """The task's training loss (cross-entropy, binary cross-entropy, mean squared error)."""
    return task_of_spec(task).loss_and_metrics(task.num_outputs, label_smoothing)[0]


def _task_metrics(task: TaskSpec) -> list:
    """The task's headline training metric (accuracy, binary accuracy, MAE): the first it reports."""
    return task_of_spec(task).loss_and_metrics(task.num_outputs, 0.0)[1][:1]


def weighting_layer(model) -> UncertaintyWeighting | None:
    return next((l for l in model.layers if isinstance(l, UncertaintyWeighting)), None)


def loss_weights(model, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """The weight each task's loss gets: learned (uncertainty) or fixed (``TaskSpec.weight``)."""
    layer = weighting_layer(model)
    return layer.effective_weights() if layer is not None else {t.name: float(t.weight) for t in tasks}


def compile_multitask(model, tasks: Sequence[TaskSpec], learning_rate, *, optimizer: str = "adam",
                      weight_decay: float = 0.0, label_smoothing: float = 0.0, training: bool = True) -> None:
    """Compiles ``model`` with one loss and metric set per task.

    With an :class:`UncertaintyWeighting` layer in the model and ``training`` on, each loss is
    uncertainty-weighted (its log-variance trains with the model); otherwise the losses get
    fixed weights (``TaskSpec.weight``, or the learned weights frozen at their current values
    when ``training`` is off, so a saved model carries only built-in losses).

    Side effect: replaces the model's optimizer.
    """
    layer = weighting_layer(model)
    losses = {t.name: _task_loss(t, label_smoothing) for t in tasks}
    weights = {t.name: float(t.weight) for t in tasks}
    if layer is not None:
        if training:
            losses = {t.name: _UncertaintyLoss(losses[t.name], layer, i, f"{t.name}_uncertainty") for i, t in enumerate(tasks)}
            weights = {t.name: 1.0 for t in tasks}
        else:
            weights = layer.effective_weights()
    from tlkeras.train.optim import make_optimizer

    opt = make_optimizer(optimizer, learning_rate, weight_decay)
    # Metrics are weighted too, so images without a task's label do not count for that task.
    model.compile(optimizer=opt, loss=losses, loss_weights=weights,
                  weighted_metrics={t.name: _task_metrics(t) for t in tasks})
