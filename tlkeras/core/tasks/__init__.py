"""Tasks: what a model predicts, and everything that follows from it.

A task owns its label encoding, its output layer, loss and metrics, the primary metric and how two
models' outputs agree, what a bundle's metadata says about the outputs, how a representative set is
stratified, and which techniques apply. The stages ask the task (``task_of(config.model)``) instead
of comparing strings. The classification family (``classification``, ``multilabel``,
``regression``) is implemented in :mod:`tlkeras.core.tasks.classification`; dense tasks
(``detection``, ``segmentation``) live in their own folders under ``tlkeras/core/`` and register
here. A new task is a new module plus one :func:`register_task` line below.

Importing this package does not import TensorFlow; a task's module is imported when it is first asked
for.
"""

from __future__ import annotations

from tlkeras.core.tasks.base import Task, get_task, register_task, task_for_data, task_names, task_of, task_of_head, task_of_run

__all__ = ["Task", "get_task", "register_task", "task_for_data", "task_names", "task_of", "task_of_head", "task_of_run"]

# Built-in tasks: name -> "module:attribute" of a zero-argument factory (a Task subclass).
register_task("classification", "tlkeras.core.tasks.classification:Classification")
register_task("multilabel", "tlkeras.core.tasks.classification:MultiLabel")
register_task("regression", "tlkeras.core.tasks.classification:Regression")
register_task("segmentation", "tlkeras.core.segmentation.task:Segmentation")
register_task("detection", "tlkeras.core.detection.task:Detection")
