"""The task protocol and its registry.

Side effects: none at import (no TensorFlow); :func:`get_task` imports a task's module the first
time that task is asked for and keeps one instance per name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkeras.errors import TLKerasError

if TYPE_CHECKING:
    from tlkeras.config import ModelConfig

_FACTORIES: dict[str, str] = {}
_INSTANCES: dict[str, "Task"] = {}


class Task:
    """What a model predicts. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the registry name (``--task``).
        head: the classification family's older name for the task (``softmax`` / ``sigmoid`` /
            ``regression``), None for the others.
        primary_metric: the key of :meth:`metrics` that picks models and judges exports
            (accuracy, AP50, mIoU, ...).
        higher_is_better: whether a larger primary metric is better.
        exclusive_classes: one class per example out of C (labels are class ids): class weights,
            stratified splits, calibration, the confusion matrix, unknown rejection and Grad-CAM
            apply.
        owns_pipeline: True for tasks whose data, model, training loop, evaluation and export are
            their own (detection, segmentation): the stages then call :meth:`train`,
            :meth:`evaluate_run` and :meth:`export_run`. False for the classification family,
            which the shared engine and export pipeline run with the hooks below.
        techniques: the techniques (``optimize``, ``adapt``, ``distill``, ``explain``, ``tune``,
            ``audit``, ``multitask``, ``fewshot``, ``trainable``) that support this task.
    """

    name: str = ""
    head: str | None = None
    primary_metric: str = ""
    higher_is_better: bool = True
    owns_pipeline: bool = False
    exclusive_classes: bool = False
    techniques: frozenset[str] = frozenset()

    # ---- the classification family's hooks (the shared engine and export pipeline call these)

    def activation(self) -> str:
        """The Keras activation of the output layer."""
        raise NotImplementedError

    def loss_and_metrics(self, num_outputs: int, label_smoothing: float):
        """(Keras loss, [Keras metrics]) for training."""
        raise NotImplementedError

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        """Metrics of model outputs against labels (a JSON-safe dict with :attr:`primary_metric`)."""
        raise NotImplementedError

    def csv_labels(self, raw: list[str], path, separator: str):
        """Parses a CSV's ``label`` column; returns (labels, class_names, strata or None)."""
        raise TLKerasError(f"the {self.name} task does not read labels from a CSV label column")

    def array_labels(self, y) -> tuple[np.ndarray, int]:
        """Labels handed over as an array, in their stored form; returns (labels, number of outputs)."""
        y = np.asarray(y).astype(np.float32)
        if y.ndim == 1:
            y = y[:, None]
        return y, int(y.shape[1])

    def encode_labels(self, y: np.ndarray, num_outputs: int) -> np.ndarray:
        """The training targets of stored labels (one-hot, multi-hot, values)."""
        return np.asarray(y, np.float32)

    def loss_value(self, y: np.ndarray, outputs: np.ndarray) -> float:
        """The training loss of stored labels ``y`` against model outputs, in NumPy (no smoothing)."""
        raise NotImplementedError

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """The share of examples on which two models' outputs give the same answer (None: not defined)."""
        return None

    def strata(self, y: np.ndarray) -> np.ndarray | None:
        """One stratum per example for stratified sampling, or None to sample uniformly."""
        return None

    def output_name(self) -> str:
        """The name of the served output tensor."""
        return "predictions"

    # ---- tasks that own their pipeline (detection, segmentation)

    def train(self, config, data=None, **kwargs):
        """Trains and writes a run folder; returns the stage's TrainResult. Owned pipelines only."""
        raise TLKerasError(f"the {self.name} task trains through the shared engine, not on its own")

    def evaluate_run(self, run_dir, **kwargs) -> dict[str, Any]:
        """Re-evaluates a saved run folder. Owned pipelines only."""
        raise TLKerasError(f"the {self.name} task evaluates through the shared evaluate stage")

    def export_run(self, run_dir, output_dir, **kwargs):
        """Exports a saved run folder to a bundle. Owned pipelines only."""
        raise TLKerasError(f"the {self.name} task exports through the shared export pipeline")

    # ---- shared

    def recognises(self, source: str) -> bool:
        """Whether a ``--data`` source is laid out for this task (e.g. a Pascal VOC folder).

        Asked, for tasks that own their pipeline, when the config names no task; must only look at
        names on disk (no decoding, no TensorFlow) and never raise.
        """
        return False

    def check_technique(self, technique: str) -> None:
        """Raises a one-line TLKerasError when ``technique`` does not support this task."""
        if technique not in self.techniques:
            supported = ", ".join(sorted(self.techniques)) or "none"
            raise TLKerasError(f"{technique} does not support the {self.name} task (it supports: {supported}); "
                               f"train a classification run for {technique}")

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def register_task(name: str, factory: str) -> None:
    """Registers a task under ``name``: ``factory`` is ``"module:attribute"`` of a Task subclass.

    Side effects: replaces an earlier registration of the same name (and its cached instance).
    """
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_FACTORIES)


def get_task(name: str) -> Task:
    """The registered task called ``name`` (one instance per name).

    Raises:
        TLKerasError: for a name nobody registered (the message lists the known ones).
    """
    if name not in _INSTANCES:
        if name not in _FACTORIES:
            raise TLKerasError(f"unknown task {name!r}; choose one of {', '.join(task_names())} (e.g. --task classification)")
        module, _, attribute = _FACTORIES[name].partition(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), attribute)()
    return _INSTANCES[name]


def task_of(model_config: "ModelConfig") -> Task:
    """The task a model config asks for (``task``, or the one its ``head`` names)."""
    return get_task(model_config.task_name)


def task_for_data(model_config: "ModelConfig", source: str | None) -> Task:
    """The task to run: the config's, or, when it names none, a dense task that recognises ``source``.

    Side effects: sets ``model_config.task`` when the data layout decided it.
    """
    if model_config.task is None and source:
        for name in task_names():
            task = get_task(name)
            if task.owns_pipeline and task.recognises(str(source)):
                model_config.task = name
                return task
    return task_of(model_config)


def task_of_head(head: str) -> Task:
    """The classification-family task that an older ``head`` value names (``softmax`` -> classification)."""
    from tlkeras.config import TASK_OF_HEAD

    return get_task(TASK_OF_HEAD.get(head, head))


def task_of_run(run_dir) -> Task:
    """The task of a saved run folder, read from its ``config.yaml`` (classification when absent)."""
    from pathlib import Path

    from tlkeras.config import ModelConfig, load_config

    path = Path(run_dir) / "config.yaml"
    return task_of(load_config(path).model if path.is_file() else ModelConfig())
