"""The student's split: the teacher's, whatever the student's seed (image and text students alike)."""

from __future__ import annotations

__all__ = ["inherit_teacher_split"]


def inherit_teacher_split(config, teacher_config) -> None:
    """Gives the student the teacher's split when both read the same data and none was set.

    A student seed that reshuffled the split would validate and test on examples the teacher
    trained on. Side effect: sets ``config.data.split_seed``, so evaluating the student run later
    sees the same split.
    """
    if config.data.source == teacher_config.data.source and config.data.split_seed is None:
        stored = teacher_config.data.split_seed
        config.data.split_seed = stored if stored is not None else teacher_config.seed
