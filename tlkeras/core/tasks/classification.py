"""The classification family: single-label (softmax), multi-label (sigmoid) and regression.

These are the tasks the shared engine trains and the shared export pipeline ships; each one was a
``head`` string before tasks existed, and ``ModelConfig.head`` still stores it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkeras.core.tasks.base import Task
from tlkeras.errors import TLKerasError


def _no_empty_label(raw: list[str], path) -> None:
    if any(not label for label in raw):
        line = raw.index("") + 2
        raise TLKerasError(f"CSV {path} line {line} has an empty label; fill it in or drop the row")

_EPS = 1e-7  # probabilities are clipped this far from 0 and 1 before a log

# Every technique was written for these three; the ones that refuse a flavour say so themselves.
_ALL = frozenset({"optimize", "adapt", "distill", "explain", "tune", "audit", "multitask", "fewshot", "trainable"})


class Classification(Task):
    """One label per example out of C classes: softmax outputs, cross-entropy, accuracy."""

    name = "classification"
    head = "softmax"
    primary_metric = "accuracy"
    exclusive_classes = True
    techniques = _ALL

    def encode_labels(self, y: np.ndarray, num_outputs: int) -> np.ndarray:
        """One-hot rows (so label smoothing works)."""
        return np.eye(num_outputs, dtype=np.float32)[y]

    def array_labels(self, y) -> tuple[np.ndarray, int]:
        """Class ids as int64, one per example; the number of classes is the largest id + 1."""
        y = np.asarray(y).astype(np.int64).reshape(-1)
        return y, int(y.max()) + 1 if y.size else 0

    def csv_labels(self, raw: list[str], path, separator: str):
        """One class name per row; the classes are the sorted distinct names (strata: the class ids)."""
        from tlkeras.core.bundle import check_classes

        _no_empty_label(raw, path)
        class_names = sorted(set(raw))
        check_classes(class_names, path)
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.array([lookup[c] for c in raw], np.int64)
        return labels, class_names, labels

    def activation(self) -> str:
        return "softmax"

    def loss_and_metrics(self, num_outputs: int, label_smoothing: float):
        from tlkeras._backend import keras

        k = min(5, num_outputs - 1) if num_outputs > 2 else 1
        return (
            keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            [keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}")],
        )

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        """Accuracy, macro precision/recall/F1, the per-class report, top-k accuracy, the confusion matrix."""
        from sklearn import metrics as skm

        labels = list(range(len(class_names)))
        pred = outputs.argmax(axis=1)
        p, r, f, s = skm.precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
        k = min(5, len(class_names) - 1) if len(class_names) > 2 else 1
        top_k = skm.top_k_accuracy_score(y_true, outputs, k=k, labels=labels) if len(class_names) > 2 else skm.accuracy_score(y_true, pred)
        return {
            "accuracy": float(skm.accuracy_score(y_true, pred)),
            "precision_macro": float(np.mean(p)),
            "recall_macro": float(np.mean(r)),
            "f1_macro": float(np.mean(f)),
            f"top{k}_accuracy": float(top_k),
            "per_class": {
                c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i, c in enumerate(class_names)
            },
            "confusion_matrix": skm.confusion_matrix(y_true, pred, labels=labels).tolist(),
            "count": int(len(y_true)),
        }

    def loss_value(self, y: np.ndarray, outputs: np.ndarray) -> float:
        """Mean cross-entropy of the true classes."""
        p = np.clip(outputs[np.arange(len(y)), y.astype(int)], _EPS, 1.0)
        return float(-np.mean(np.log(p)))

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """The share of examples with the same top class."""
        return float(np.mean(a.argmax(1) == b.argmax(1)))

    def strata(self, y: np.ndarray) -> np.ndarray | None:
        return np.asarray(y).astype(np.int64).reshape(-1)

    def output_name(self) -> str:
        return "probabilities"


class MultiLabel(Task):
    """Any number of labels per example: independent sigmoids, binary cross-entropy, F1 at 0.5."""

    name = "multilabel"
    head = "sigmoid"
    primary_metric = "subset_accuracy"
    techniques = _ALL

    def activation(self) -> str:
        return "sigmoid"

    def csv_labels(self, raw: list[str], path, separator: str):
        """``separator``-joined tags per row (an empty label: no tag); multi-hot rows, no strata."""
        from tlkeras.core.paths import check_class_names

        tags = [[t.strip() for t in label.split(separator) if t.strip()] for label in raw]
        class_names = sorted({t for ts in tags for t in ts})
        if not class_names:
            raise TLKerasError(f"CSV {path} has no labels")
        check_class_names(class_names, path)
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.zeros((len(tags), len(class_names)), np.float32)
        for i, ts in enumerate(tags):
            labels[i, [lookup[t] for t in ts]] = 1.0
        return labels, class_names, None

    def loss_and_metrics(self, num_outputs: int, label_smoothing: float):
        from tlkeras._backend import keras

        return keras.losses.BinaryCrossentropy(), [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(multi_label=True, name="auc")]

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        """Subset accuracy, micro and macro F1 at 0.5, the per-class F1."""
        from sklearn import metrics as skm

        pred = (outputs >= 0.5).astype(int)
        truth = y_true.astype(int)
        per = skm.f1_score(truth, pred, average=None, zero_division=0)
        return {
            "subset_accuracy": float(skm.accuracy_score(truth, pred)),
            "f1_micro": float(skm.f1_score(truth, pred, average="micro", zero_division=0)),
            "f1_macro": float(skm.f1_score(truth, pred, average="macro", zero_division=0)),
            "per_class_f1": {c: float(v) for c, v in zip(class_names, per)},
            "count": int(len(truth)),
        }

    def loss_value(self, y: np.ndarray, outputs: np.ndarray) -> float:
        """Mean binary cross-entropy over every label."""
        p = np.clip(outputs, _EPS, 1 - _EPS)
        t = y.astype(np.float32).reshape(p.shape)
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))

    def agreement(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """The share of examples with the same set of labels at 0.5."""
        return float(np.mean(np.all((a >= 0.5) == (b >= 0.5), axis=1)))

    def strata(self, y: np.ndarray) -> np.ndarray | None:
        """The first positive label (examples without one form their own stratum)."""
        y2 = np.asarray(y).reshape(len(y), -1)
        return np.where(y2.any(axis=1), y2.argmax(axis=1), -1)

    def output_name(self) -> str:
        return "probabilities"


class Regression(Task):
    """Real-valued targets: a linear output, mean squared error, MAE."""

    name = "regression"
    head = "regression"
    primary_metric = "mae"
    higher_is_better = False
    techniques = _ALL

    def activation(self) -> str:
        return "linear"

    def csv_labels(self, raw: list[str], path, separator: str):
        """One or more ``separator``-joined numbers per row (the same count in every row); no strata."""
        _no_empty_label(raw, path)
        try:
            values = [[float(v) for v in label.split(separator)] for label in raw]
        except ValueError:
            raise TLKerasError(f"CSV {path}: a regression head needs numeric labels") from None
        if len({len(v) for v in values}) != 1:
            raise TLKerasError(f"CSV {path}: every row needs the same number of regression targets")
        labels = np.array(values, np.float32)
        class_names = [f"target_{i}" for i in range(labels.shape[1])] if labels.shape[1] > 1 else ["target"]
        return labels, class_names, None

    def loss_and_metrics(self, num_outputs: int, label_smoothing: float):
        from tlkeras._backend import keras

        return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]

    def loss_value(self, y: np.ndarray, outputs: np.ndarray) -> float:
        """Mean squared error."""
        return float(np.mean((outputs - y.reshape(outputs.shape)) ** 2))

    def metrics(self, y_true: np.ndarray, outputs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
        """MAE, RMSE and R^2."""
        from sklearn import metrics as skm

        y_true = y_true.reshape(outputs.shape)
        return {
            "mae": float(skm.mean_absolute_error(y_true, outputs)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, outputs))),
            "r2": float(skm.r2_score(y_true, outputs)) if len(y_true) > 1 else float("nan"),
            "count": int(len(y_true)),
        }
