"""The trials: a KerasTuner HyperModel whose trials are ``tlkeras.train`` runs.

:func:`trial_config` turns a trial's hyperparameter values into a :class:`~tlkeras.config.RunConfig`;
:class:`TransferHyperModel` builds it with :func:`tlkeras.core.models.build_model` and trains it with
the training engine's two-phase fit (both phases, early stopping restoring the best weights), then
scores it on the validation split with the metrics ``tlkeras.train`` reports. Two caches keep
trials cheap: decoded images per input size, and the pooled backbone features of an unaugmented
phase 1 per (backbone weights, image size).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
from typing import Any

import numpy as np

from tlkeras._backend import keras, keras_tuner, tf
from tlkeras.config import RunConfig
from tlkeras.core.backbones import get_backbone
from tlkeras.core.bundle import require_images
from tlkeras.core.data import DataBundle, Split, load_data
from tlkeras.core.metrics import compute_metrics, predict
from tlkeras.core.models import HUB_PREFIX, backbone_layers, build_model
from tlkeras.core.tasks import task_of_head
from tlkeras.errors import TLKerasError
from tlkeras.tune.device import effective_alpha
from tlkeras.tune.space import HYPERPARAMETERS, SearchSpace, canonical_backbone

kt = keras_tuner()

__all__ = ["NoWeightsError", "TransferHyperModel", "trial_config", "epoch_unit", "clean_value"]


def _phase1_is_cheap(base: RunConfig) -> bool:
    """Whether every trial's phase 1 runs on cached features (whatever the trial's ``augment``)."""
    t = base.train
    return t.feature_cache == "on" or (t.feature_cache == "auto" and not t.phase1_augment)


def _shortens_phase1(base: RunConfig) -> bool:
    """Whether Hyperband's early rounds shorten phase 1 too (see :func:`epoch_unit`)."""
    return not (_phase1_is_cheap(base) and base.train.phase2_epochs > 0)


def epoch_unit(base: RunConfig) -> int:
    """Hyperband's ``max_epochs``: the epochs of the phase(s) a budget shortens.

    When phase 1 trains the head on cached features it costs seconds, so Hyperband shortens
    only phase 2 (fine-tuning, the expensive part) and its unit is one phase-2 epoch; otherwise
    both phases are shortened and the unit is one epoch of the longer phase.
    """
    t = base.train
    if not _shortens_phase1(base):
        return t.phase2_epochs
    return max(t.phase1_epochs, t.phase2_epochs, 1)


def clean_value(value: Any) -> Any:
    """Drops float noise of stepped ranges (0.15000000000000002 -> 0.15)."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


class NoWeightsError(TLKerasError):
    """A trial's architecture (backbone and width) has no weights file among the search's."""


def _weights_for_trial(base: RunConfig, config: RunConfig, weights_for: dict[str, str] | None) -> str:
    """The weights a trial's architecture loads: its ``weights_for`` entry, else the base's
    ``imagenet``/``none``, else the base's file when the architecture is the base's own."""
    backbone = canonical_backbone(config.model.backbone)
    alpha = effective_alpha(config)
    width = f"@{alpha:g}" if alpha is not None else ""
    for key, path in (weights_for or {}).items():
        name, _, raw = str(key).partition("@")
        if canonical_backbone(name) == backbone and (not raw or alpha is not None and math.isclose(float(raw), alpha)):
            if raw or not any(str(k).startswith(f"{name}@") for k in weights_for):
                return str(path)
    weights = str(base.model.weights)
    if weights.strip().lower() in ("imagenet", "none"):
        return weights
    if backbone == canonical_backbone(base.model.backbone) and alpha == effective_alpha(base):
        return weights
    raise NoWeightsError(f"no weights file for {backbone}{width}: model.weights is made for {canonical_backbone(base.model.backbone)}; add --arch-weights {backbone}{width}=FILE")


def trial_config(
    base: RunConfig, values: dict[str, Any], fraction: float = 1.0, *, shorten_phase1: bool = True,
    weights_for: dict[str, str] | None = None,
) -> RunConfig:
    """The RunConfig of one trial: ``base`` with the hyperparameter ``values`` applied.

    Args:
        base: the base config (data source, epochs, seed, everything not searched).
        values: hyperparameter name -> value (KerasTuner's ``tuner/*`` entries are ignored).
        fraction: share of the base epochs a shortened phase trains (Hyperband's early rounds);
            ``shorten_phase1`` False leaves phase 1 at full length. A shortened phase with
            epochs still trains at least one.
        weights_for: weights files by architecture, ``backbone@alpha`` or ``backbone`` ->
            path (the ``@alpha`` entry wins); architectures not named use the base's weights.

    Returns:
        A validated copy; ``name`` is None so ``tlkeras.train`` picks a fresh run directory.

    Raises:
        NoWeightsError: the base's weights are a file for another architecture and
            ``weights_for`` names none for this one.
    """
    config = copy.deepcopy(base)
    home = canonical_backbone(base.model.backbone)
    for name, value in values.items():
        if name not in HYPERPARAMETERS:
            continue
        value = clean_value(value)
        if name == "backbone":
            config.model.backbone = value
            if canonical_backbone(value) != home:
                config.model.alpha = None  # the base alpha belongs to the base backbone's family
        elif name == "alpha":
            continue  # applied below, once the backbone is known
        elif name == "image_size":
            config.data.image_size = int(value)
        elif name == "dropout":
            config.model.dropout = float(value)
        elif name == "hidden_units":
            config.model.hidden_units = [int(value)] if int(value) > 0 else []
        elif name == "augment":
            config.data.augment = value
        elif name == "weight_decay":
            config.train.weight_decay = float(value)
            if value > 0 and config.train.optimizer == "adam":
                config.train.optimizer = "adamw"  # AdamW with decay 0 is Adam: one family
        else:
            setattr(config.train, name, value)
    if "alpha" in values:
        alpha = float(values["alpha"])
        hub = config.model.backbone.startswith(HUB_PREFIX)
        has_alpha = not hub and get_backbone(config.model.backbone).has_alpha
        config.model.alpha = alpha if has_alpha and alpha > 0 else None
    config.model.weights = _weights_for_trial(base, config, weights_for)
    if fraction < 1.0:
        t = config.train
        if shorten_phase1:
            t.phase1_epochs = math.ceil(t.phase1_epochs * fraction) if t.phase1_epochs else 0
        t.phase2_epochs = math.ceil(t.phase2_epochs * fraction) if t.phase2_epochs else 0
    config.name = None
    return config.validate()


class _DataCache:
    """Decodes the data once per image size (trials at one size share the in-memory images)."""

    def __init__(self, base: RunConfig, data: DataBundle | None):
        self.base = base
        self.given = data
        self.bundles: dict[int, DataBundle] = {}

    def get(self, size: int) -> DataBundle:
        size = int(size)
        if size not in self.bundles:
            if self.given is not None:
                self.bundles[size] = self.given if self.given.image_size == size else _resized(self.given, size)
            else:
                self.bundles[size] = require_images(load_data(self.base.data, size, self.base.model.head, self.base.seed), "the search (tlkeras.tune)")
        return self.bundles[size]


def _resized(bundle: DataBundle, size: int) -> DataBundle:
    def one(split: Split | None) -> Split | None:
        if split is None:
            return None
        x = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(split.x, (size, size)), 0, 255)), tf.uint8).numpy()
        return Split(x, split.y, list(split.paths))

    return dataclasses.replace(bundle, train=one(bundle.train), val=one(bundle.val), test=one(bundle.test), image_size=size)


class _FeatureCache:
    """Keeps the pooled backbone features of phase 1 across trials.

    ``tlkeras.train.recipe.fit_two_phase`` computes features with its module function ``cached_features``;
    while a trial runs, that function is wrapped by a memo keyed by a hash of the backbone's
    weights and the image array, so a second trial with the same (backbone, size, weights) gets
    the same NumPy features back without running the backbone. Augmented views (random) are
    never cached.
    """

    def __init__(self):
        self.store: dict[tuple, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _fingerprint(model) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for layer in backbone_layers(model):
            for weight in layer.weights:
                digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        return digest.hexdigest()

    @contextlib.contextmanager
    def active(self, enabled: bool):
        import tlkeras.train.recipe as training

        original = getattr(training, "cached_features", None)
        if not enabled or original is None:  # a core without the hook: correct, just uncached
            yield
            return

        def cached(model, x, batch_size, augment, views, seed, **store):
            if augment != "off" and views > 1:
                return original(model, x, batch_size, augment, views, seed, **store)
            key = (self._fingerprint(model), id(x), x.shape)
            if key in self.store:
                self.hits += 1
            else:
                self.misses += 1
                self.store[key] = original(model, x, batch_size, augment, views, seed, **store)
            return self.store[key]

        training.cached_features = cached
        try:
            yield
        finally:
            training.cached_features = original


def _val_loss(head: str, y: np.ndarray, outputs: np.ndarray, num_outputs: int) -> float:
    return task_of_head(head).loss_value(y, outputs)


class TransferHyperModel(kt.HyperModel):
    """A KerasTuner HyperModel whose trials are ``tlkeras.train`` runs.

    ``build(hp)`` seeds like :func:`tlkeras.train.run.train_model` and calls
    :func:`tlkeras.core.models.build_model`; ``fit(hp, model)`` calls
    :func:`tlkeras.train.recipe.fit_two_phase` and returns the validation metrics of the trained
    model (:func:`reported_metrics`) plus ``phase1_epochs``/``phase2_epochs`` (the epochs the
    trial was given) and ``seconds``.

    Args:
        base: the base RunConfig (validated, data source set unless ``data`` is given).
        space: the search space.
        data: an in-memory DataBundle instead of ``base.data.source``.
        callbacks: extra Keras callbacks for every trial's training.
        trial_verbose: Keras progress display inside trials.
    """

    def __init__(
        self, base: RunConfig, space: SearchSpace, data: DataBundle | None = None, callbacks: list | None = None,
        trial_verbose: int = 0, weights_for: dict[str, str] | None = None,
    ):
        super().__init__(name="tlkeras_transfer", tunable=True)
        self.base = base
        self.space = space
        self.weights_for = dict(weights_for or {})
        self.callbacks = list(callbacks or [])
        self.trial_verbose = trial_verbose
        self.data = _DataCache(base, data)
        self.features = _FeatureCache()

    def declare_hyperparameters(self, hp) -> None:
        self.space.declare(hp)

    def config_for(self, hp) -> RunConfig:
        """The RunConfig a trial with these hyperparameters trains (Hyperband: its epoch share)."""
        values = self.space.declare(hp)
        epochs = hp.values.get("tuner/epochs")
        fraction = min(1.0, float(epochs) / epoch_unit(self.base)) if epochs else 1.0
        config = trial_config(self.base, values, fraction, shorten_phase1=_shortens_phase1(self.base), weights_for=self.weights_for)
        config.train.verbose = self.trial_verbose
        return config

    def build(self, hp):
        from tlkeras.train.run import select_strategy

        config = self.config_for(hp)
        bundle = self.data.get(config.data.image_size)
        keras.utils.set_random_seed(config.seed)  # as train_model does, so initial weights match
        self._strategy = select_strategy(config.train.distribute)
        with self._strategy.scope():
            return build_model(config.model, bundle.num_outputs, config.data.image_size)

    def fit(self, hp, model, *args, callbacks=None, **kwargs) -> dict[str, float]:
        from tlkeras.train.recipe import fit_two_phase, uses_feature_cache

        config = self.config_for(hp)
        bundle = self.data.get(config.data.image_size)
        with self.features.active(uses_feature_cache(config)):
            fit_two_phase(
                model, bundle, config, callbacks=[*self.callbacks, *(callbacks or [])],
                strategy=getattr(self, "_strategy", None),
            )
        outputs = predict(model, bundle.val.x, config.data.batch_size)
        metrics = compute_metrics(bundle.val.y, outputs, bundle.class_names, bundle.head)
        result = {"val_loss": _val_loss(bundle.head, bundle.val.y, outputs, bundle.num_outputs)}
        for key, value in metrics.items():
            if isinstance(value, float):
                result[f"val_{key}"] = value
        result["phase1_epochs"] = float(config.train.phase1_epochs)
        result["phase2_epochs"] = float(config.train.phase2_epochs)
        return result
