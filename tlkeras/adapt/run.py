"""One entry point for the six unlabelled-data techniques, by name.
"""

from __future__ import annotations

import dataclasses

from tlkeras.adapt import semisupervised as semi
from tlkeras.adapt import simclr
from tlkeras.adapt.domain import DomainAdaptationOptions, adapt_domain
from tlkeras.adapt.importance import ImportanceWeightingOptions, train_importance_weighted
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle
from tlkeras.errors import TLKerasError
from tlkeras.train.run import TrainResult

__all__ = ['METHODS', 'train_with_unlabeled']


METHODS = ("dann", "mmd", "importance", "pseudo_label", "fixmatch", "simclr")


def train_with_unlabeled(config: RunConfig, method: str, unlabeled, options=None, *, data: DataBundle | None = None, target_test=None, write: bool = True) -> TrainResult:
    """Runs one unlabelled-data technique by name; what ``python -m tlkeras.adapt`` calls.

    Args:
        config: the run's settings (labelled data, backbone, head, training).
        method: one of :data:`METHODS` (``pseudo-label`` is accepted for ``pseudo_label``).
        unlabeled: the unlabelled (for dann/mmd/importance: target-domain) images.
        options: the technique's options dataclass (default: its defaults).
        data: a ready labelled DataBundle (default: load ``config.data.source``).
        target_test: labelled target images to report on (domain adaptation only).
        write: write the run directory.

    Raises:
        TLKerasError: an unknown method, options of the wrong type, or the technique's own errors.
    """
    method = str(method).replace("-", "_").lower()
    if method not in METHODS:
        raise TLKerasError(f"unknown technique {method!r}; choose one of {', '.join(METHODS)}")
    if target_test is not None and method not in ("dann", "mmd", "importance"):
        raise TLKerasError("a labelled target test set only applies to dann, mmd and importance")

    kinds = {
        "dann": DomainAdaptationOptions, "mmd": DomainAdaptationOptions, "importance": ImportanceWeightingOptions,
        "pseudo_label": semi.PseudoLabelOptions, "fixmatch": semi.FixMatchOptions,
        "simclr": simclr.SimCLROptions,
    }
    if options is None:
        options = kinds[method]()
    if not isinstance(options, kinds[method]):
        raise TLKerasError(f"{method} takes {kinds[method].__name__}, got {type(options).__name__}")
    if method in ("dann", "mmd"):
        options = dataclasses.replace(options, method=method)
        return adapt_domain(config, unlabeled, options, data=data, target_test=target_test, write=write)
    if method == "importance":
        return train_importance_weighted(config, unlabeled, options, data=data, target_test=target_test, write=write)
    if method == "pseudo_label":
        return semi.self_train(config, unlabeled, options, data=data, write=write)
    if method == "fixmatch":
        return semi.train_fixmatch(config, unlabeled, options, data=data, write=write)
    return simclr.train_simclr(config, unlabeled, options, data=data, write=write)
