"""Importance weighting for covariate shift: source images weighted by a domain classifier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.adapt.common import _count_steps, prepare_data, write_unlabeled_run
from tlkeras.adapt.domain import _target_splits
from tlkeras.config import RunConfig
from tlkeras.core.augment import augmenter
from tlkeras.core.data import DataBundle, encode_labels, make_dataset
from tlkeras.core.metrics import predict
from tlkeras.core.models import build_model, feature_extractor, freeze_backbone, head_model
from tlkeras.core.stream import indexed_batches
from tlkeras.errors import TLKerasError
from tlkeras.train.optim import epoch_seed, make_optimizer
from tlkeras.train.phase import PhaseHistory
from tlkeras.train.recipe import FitResult, fine_tune, open_and_fine_tune, train_phase
from tlkeras.train.run import TrainResult


@dataclass
class ImportanceWeightingOptions:
    """Settings of importance weighting by a domain classifier.

    Attributes:
        C: inverse regularization strength of the logistic-regression domain classifier.
        folds: cross-fitting folds: each source image is weighted by a classifier that did not
            see it, so the weights do not just reflect memorized images.
        max_weight: weights are clipped to [1 / max_weight, max_weight] times their mean, which
            bounds the variance a few extreme weights would add.
    """

    C: float = 0.1
    folds: int = 5
    max_weight: float = 10.0

    def validate(self) -> "ImportanceWeightingOptions":
        if self.C <= 0:
            raise TLKerasError(f"C must be > 0, got {self.C}")
        if self.folds < 2:
            raise TLKerasError(f"folds must be >= 2, got {self.folds}")
        if self.max_weight <= 1:
            raise TLKerasError(f"max_weight must be > 1, got {self.max_weight}")
        return self


def importance_weights(source_features: np.ndarray, target_features: np.ndarray, options: ImportanceWeightingOptions | None = None, seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Per-source-sample weights ``p(target|x) / p(source|x) * n_source / n_target``.

    A standardized logistic regression separates source from target features; its cross-fitted
    probabilities give the density ratio. Weights are normalized to mean 1 and clipped by
    ``options.max_weight``.

    Returns:
        (weights, info): weights of shape (n_source,), and ``domain_auc`` (0.5: the domains look
        alike, 1.0: perfectly separable), ``effective_sample_size`` and the weights' range.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    options = (options or ImportanceWeightingOptions()).validate()
    fs = np.asarray(source_features, np.float64).reshape(len(source_features), -1)
    ft = np.asarray(target_features, np.float64).reshape(len(target_features), -1)
    ns, nt = len(fs), len(ft)
    if ns < 2 or nt < 2:
        raise TLKerasError("importance weighting needs at least 2 source and 2 target images")
    x = np.concatenate([fs, ft])
    d = np.concatenate([np.zeros(ns, np.int64), np.ones(nt, np.int64)])
    folds = StratifiedKFold(n_splits=min(options.folds, ns, nt), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=options.C, max_iter=2000))
    p = cross_val_predict(classifier, x, d, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(d, p))
    ps = np.clip(p[:ns], 1e-6, 1 - 1e-6)
    w = ps / (1.0 - ps) * (ns / nt)
    w = w / w.mean()
    w = np.clip(w, 1.0 / options.max_weight, options.max_weight)
    w = w / w.mean()
    info = {
        "domain_auc": auc,
        "effective_sample_size": float(w.sum() ** 2 / np.sum(w ** 2)),
        "weight_min": float(w.min()),
        "weight_max": float(w.max()),
    }
    return w.astype(np.float32), info


def _weighted_fit(model, data: DataBundle, config: RunConfig, weights: np.ndarray, source_features: np.ndarray, callbacks: list) -> tuple[dict, dict]:
    """Two-phase training through the shared engine where each source image's loss is multiplied by its weight."""
    tc, dc = config.train, config.data
    n, bs = data.num_outputs, dc.batch_size
    history = PhaseHistory()
    timings: dict[str, float] = {}
    targets = encode_labels(data.train.y, "softmax", n)
    val_targets = encode_labels(data.val.y, "softmax", n)

    def compiler(net, weighted_metrics):
        def compile(lr):
            net.compile(optimizer=make_optimizer(tc.optimizer, lr, tc.weight_decay),
                        loss=keras.losses.CategoricalCrossentropy(label_smoothing=tc.label_smoothing),
                        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], weighted_metrics=weighted_metrics)
        return compile

    start = time.perf_counter()
    if tc.phase1_epochs > 0:
        # Phase 1 always trains the head on cached features (the frozen backbone never changes).
        freeze_backbone(model)
        head = head_model(model)
        val_features = predict(feature_extractor(model), data.val.x, bs)
        cached = tf.data.Dataset.from_tensor_slices((source_features, targets, weights))

        def make_phase1_ds(epoch):
            return cached.shuffle(len(targets), seed=epoch_seed(config.seed, 1, epoch)).batch(bs)

        val1 = tf.data.Dataset.from_tensor_slices((val_features, val_targets)).batch(bs)
        result = train_phase(head, make_phase1_ds, val1, config, phase=1, epochs=tc.phase1_epochs, learning_rate=tc.phase1_lr,
                             steps=_count_steps(len(source_features), bs), compile=compiler(head, []), monitor="val_loss",
                             callbacks=callbacks)
        history.add(result.history, 1)
    timings["phase1"] = time.perf_counter() - start

    def fit2():
        steps = _count_steps(len(data.train), bs)

        def make_phase2_ds(epoch):
            seed = epoch_seed(config.seed, 2, epoch)
            ds = indexed_batches(data.train.x, bs, extras=(targets, weights), shuffle=True, seed=seed)
            aug = augmenter(dc.augment, seed)
            if aug is not None:
                ds = ds.map(lambda x, y, w: (tf.clip_by_value(aug(x, training=True), 0.0, 255.0), y, w),
                            num_parallel_calls=tf.data.AUTOTUNE)
            return ds.prefetch(tf.data.AUTOTUNE)

        val_ds = make_dataset(data.val, head="softmax", num_outputs=n, batch_size=bs)
        return fine_tune(model, make_phase2_ds, val_ds, config, history, steps=steps, compile=compiler(model, None),
                         callbacks=callbacks)

    selection, _ = open_and_fine_tune(model, config, timings, fit2)
    return FitResult(history.values, timings, selection)


def train_importance_weighted(
    config: RunConfig,
    target,
    options: ImportanceWeightingOptions | None = None,
    *,
    data: DataBundle | None = None,
    target_test=None,
    write: bool = True,
    callbacks: list | None = None,
) -> TrainResult:
    """Two-phase training on the source data with each image weighted by how target-like it is.

    The weights come from :func:`importance_weights` on the pretrained (frozen) backbone's pooled
    features of the source training images and the target images; ``metrics["importance"]``
    records the domain classifier's AUC and the effective sample size. An AUC above 0.95 warns:
    domains that hardly overlap cannot be matched by re-weighting (use DANN or MMD then). Early stopping uses the
    (unweighted) source validation loss, as in ``tlkeras.train``.

    Args and Raises: as :func:`adapt_domain`.

    Side effects: seeds the random generators; writes ``<output_dir>/<name>/`` when ``write``.
    """
    options = (options or ImportanceWeightingOptions()).validate()
    t0 = time.perf_counter()
    data, size, xt = prepare_data(config, data, target, what="target")
    targets = _target_splits(target_test, data, size)
    timings: dict[str, float] = {"data": time.perf_counter() - t0}
    model = build_model(config.model, data.num_outputs, size)
    start = time.perf_counter()
    extractor = feature_extractor(model)
    fs = predict(extractor, data.train.x, config.data.batch_size)
    ft = predict(extractor, xt, config.data.batch_size)
    weights, info = importance_weights(fs, ft, options, seed=config.seed)
    if info["domain_auc"] > 0.95:
        import warnings

        warnings.warn(
            f"the domain classifier separates source from target almost perfectly (AUC {info['domain_auc']:.3f}, "
            f"effective sample size {info['effective_sample_size']:.0f} of {len(fs)}); importance weights cannot "
            f"correct a shift the domains do not overlap in; prefer dann or mmd",
            stacklevel=2,
        )
    timings["weights"] = time.perf_counter() - start
    fitted = _weighted_fit(model, data, config, weights, fs, list(callbacks or []))
    history, fit_timings = fitted
    timings.update(fit_timings)
    timings["total"] = time.perf_counter() - t0
    return write_unlabeled_run(
        config, data, model, history, method="importance", options=options, timings=timings,
        unlabeled_count=len(xt), unlabeled_source=target, extra_metrics={"importance": info},
        extra_splits=targets, extra_info={"selection": fitted.selection}, write=write,
    )
