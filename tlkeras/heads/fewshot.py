"""Few-shot classes with prototypes: add a class from a handful of images, without retraining.

A prototype is the mean embedding of a class's K example images (prototypical networks, Snell et
al. 2017); a query belongs to the class whose prototype is nearest. The embeddings are the pooled
features of a trained run's backbone or of a pretrained backbone
(:func:`tlkeras.core.models.feature_extractor`), so:

- :class:`PrototypeClassifier` works on embeddings (NumPy arrays): build it from labelled
  embeddings, ``add_class`` a new class from a few embeddings (no other prototype changes),
  ``add_examples`` to refine one, predict by cosine similarity or squared Euclidean distance.
- :class:`FewShotClassifier` pairs it with the Keras feature extractor: images in, classes out;
  ``to_keras()`` gives one model (raw pixels -> probabilities) whose prototypes sit in a
  :class:`PrototypeLayer` as constants, which :func:`export_fewshot` converts to TFLite like any
  tlkeras model (``metadata.json``, verification on LiteRT) and :meth:`FewShotClassifier.save`
  writes as a directory that :meth:`FewShotClassifier.load` reads back.
- :func:`sample_episodes` and :func:`evaluate_episodes` measure N-way K-shot accuracy on a
  labelled set, with a 95% interval.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras.errors import TLKerasError

__all__ = [
    "METRICS",
    "PrototypeClassifier",
    "PrototypeLayer",
    "FewShotClassifier",
    "embed_images",
    "sample_episodes",
    "evaluate_episodes",
    "mean_interval",
    "export_fewshot",
]

METRICS = ("cosine", "euclidean")


def _check_embeddings(x: Any, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise TLKerasError(f"{what} must be a non-empty N x D array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise TLKerasError(f"{what} have {x.shape[1]} dimensions but the prototypes have {dim}; use the same backbone")
    if not np.all(np.isfinite(x)):
        raise TLKerasError(f"{what} contain NaN or infinite values")
    return x


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class PrototypeClassifier:
    """Class prototypes over embeddings, classified by distance.

    Each prototype is the mean of its class's transformed support embeddings: ``x - center``,
    then scaled to unit length for the ``cosine`` metric. Scores are ``scale * cos(q, p)``
    (cosine) or ``-scale * ||q - p||^2`` (euclidean); probabilities are their softmax.

    Attributes:
        sums: C x D sums of each class's transformed support embeddings (the prototype is
            ``sums / counts``; keeping sums makes adding examples exact).
        counts: support examples per class.
        class_names: the classes, in score order.
        metric: ``cosine`` or ``euclidean``.
        center: a D-vector subtracted from every embedding (fixed once set, so adding a class
            never moves the others), or None.
        scale: multiplies the scores before the softmax (a temperature; predictions do not
            depend on it).
    """

    sums: np.ndarray
    counts: np.ndarray
    class_names: list[str]
    metric: str = "cosine"
    center: np.ndarray | None = None
    scale: float = 10.0

    def __post_init__(self):
        if self.metric not in METRICS:
            raise TLKerasError(f"metric={self.metric!r} is not valid; choose one of {', '.join(METRICS)}")
        self.sums = np.asarray(self.sums, np.float64)
        self.counts = np.asarray(self.counts, np.int64)
        self.class_names = [str(c) for c in self.class_names]
        if self.center is not None:
            self.center = np.asarray(self.center, np.float64).reshape(-1)
        if len(set(self.class_names)) != len(self.class_names):
            raise TLKerasError(f"class names must be unique, got {self.class_names}")
        if self.sums.ndim != 2 or len(self.sums) != len(self.class_names) or len(self.counts) != len(self.class_names):
            raise TLKerasError("sums, counts and class_names must describe the same classes")
        if not self.scale > 0:
            raise TLKerasError(f"scale must be > 0, got {self.scale}")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def fit(cls, embeddings: Any, labels: Sequence[int] | np.ndarray, class_names: Sequence[str] | None = None, *,
            metric: str = "cosine", center: bool | np.ndarray = False, scale: float | None = None) -> "PrototypeClassifier":
        """Builds one prototype per class from labelled support embeddings.

        Args:
            embeddings: N x D support embeddings.
            labels: N class indices in ``[0, C)``.
            class_names: C names (default ``class_0..``); every class needs an example.
            metric: ``cosine`` (default; robust for pooled CNN features) or ``euclidean``.
            center: True subtracts the mean of these support embeddings from every embedding
                (helps cosine on ReLU features, which all point into one orthant); an array is
                used as the center; False: none.
            scale: score scale (default 10 for cosine, 1 for euclidean).

        Raises:
            TLKerasError: empty or mismatched inputs, a class without examples.
        """
        x = _check_embeddings(embeddings)
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(x):
            raise TLKerasError(f"{len(x)} embeddings but {len(y)} labels")
        if y.dtype.kind not in "iu":
            raise TLKerasError("labels must be integer class indices")
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(n_classes)]
        if y.min() < 0 or y.max() >= n_classes:
            raise TLKerasError(f"labels must be in [0, {n_classes - 1}]")
        empty = [names[c] for c in range(n_classes) if not np.any(y == c)]
        if empty:
            raise TLKerasError(f"class(es) {empty} have no support examples; give each class at least one")
        if isinstance(center, np.ndarray):
            c = _check_embeddings(center, x.shape[1], "center")[0].astype(np.float64)
        else:
            c = x.mean(axis=0).astype(np.float64) if center else None
        model = cls(np.zeros((n_classes, x.shape[1])), np.zeros(n_classes, np.int64), names, metric, c,
                    scale if scale is not None else (10.0 if metric == "cosine" else 1.0))
        t = model.transform(x)
        for k in range(n_classes):
            model.sums[k] = t[y == k].sum(axis=0)
            model.counts[k] = int(np.sum(y == k))
        return model

    def add_class(self, name: str, embeddings: Any) -> int:
        """Adds a class whose prototype is the mean of ``embeddings``; returns its index.

        No other prototype changes (the center, if any, stays as it is).

        Raises:
            TLKerasError: a name already present, embeddings of another dimension.
        """
        name = str(name)
        if name in self.class_names:
            raise TLKerasError(f"class {name!r} already exists; use add_examples to give it more examples")
        if not name.strip():
            raise TLKerasError("a class name must not be empty")
        t = self.transform(_check_embeddings(embeddings, self.dim))
        self.sums = np.vstack([self.sums, t.sum(axis=0, keepdims=True)])
        self.counts = np.append(self.counts, len(t))
        self.class_names.append(name)
        return len(self.class_names) - 1

    def add_examples(self, name: str, embeddings: Any) -> None:
        """Adds support examples to an existing class (its prototype becomes the mean of all)."""
        if name not in self.class_names:
            raise TLKerasError(f"unknown class {name!r}; known: {', '.join(self.class_names)} (use add_class)")
        k = self.class_names.index(name)
        t = self.transform(_check_embeddings(embeddings, self.dim))
        self.sums[k] += t.sum(axis=0)
        self.counts[k] += len(t)

    def remove_class(self, name: str) -> None:
        """Removes a class; the others keep their prototypes."""
        if name not in self.class_names:
            raise TLKerasError(f"unknown class {name!r}; known: {', '.join(self.class_names)}")
        if len(self.class_names) <= 1:
            raise TLKerasError("cannot remove the last class")
        k = self.class_names.index(name)
        self.sums = np.delete(self.sums, k, axis=0)
        self.counts = np.delete(self.counts, k)
        del self.class_names[k]

    # -- inference ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def prototypes(self) -> np.ndarray:
        """C x D prototypes in the transformed space (unit length for cosine), float32."""
        p = self.sums / np.maximum(self.counts, 1)[:, None]
        return (_l2(p) if self.metric == "cosine" else p).astype(np.float32)

    def transform(self, embeddings: Any) -> np.ndarray:
        """Centers (if a center is set) and, for cosine, L2-normalizes embeddings."""
        x = np.asarray(embeddings, np.float64)
        if self.center is not None:
            x = x - self.center
        return _l2(x) if self.metric == "cosine" else x

    def scores(self, embeddings: Any) -> np.ndarray:
        """N x C scores: ``scale * cosine`` or ``-scale * squared distance`` (higher is closer)."""
        q = self.transform(_check_embeddings(embeddings, self.dim))
        p = self.prototypes.astype(np.float64)
        if self.metric == "cosine":
            s = q @ p.T
        else:
            s = -(np.sum(q * q, axis=1, keepdims=True) - 2.0 * q @ p.T + np.sum(p * p, axis=1)[None])
        return (self.scale * s).astype(np.float32)

    def predict_proba(self, embeddings: Any) -> np.ndarray:
        """N x C probabilities (softmax of the scores)."""
        s = self.scores(embeddings).astype(np.float64)
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, embeddings: Any) -> np.ndarray:
        """N class indices (the nearest prototype)."""
        return self.scores(embeddings).argmax(axis=1)

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "metric": self.metric, "scale": float(self.scale),
                "counts": self.counts.tolist(), "dim": self.dim, "centered": self.center is not None}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the classifier to one ``.npz`` file (atomically)."""
        from tlkeras.runs import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, sums=self.sums, counts=self.counts,
                         center=self.center if self.center is not None else np.zeros(0),
                         meta=np.array(json.dumps(self.to_dict())))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrototypeClassifier":
        """Reads a classifier written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                center = data["center"] if data["center"].size else None
                return cls(data["sums"], data["counts"], meta["class_names"], meta["metric"], center, meta["scale"])
        except FileNotFoundError:
            raise TLKerasError(f"prototype file {path} does not exist; pass the prototypes file the few-shot export wrote") from None
        except (KeyError, ValueError, OSError) as exc:
            raise TLKerasError(f"{path} is not a tlkeras prototype file ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------
# Keras: the prototypes as a layer


@keras.saving.register_keras_serializable(package="tlkeras")
class PrototypeLayer(keras.layers.Layer):
    """Scores embeddings against constant prototypes (non-trainable weights).

    ``cosine``: ``scale * l2_normalize(x - center) @ prototypes^T``; ``euclidean``:
    ``-scale * ||(x - center) - p||^2``. The prototypes and center are weights, saved with the
    model and folded into constants by the TFLite converter.

    Args:
        num_classes: C, the number of prototypes.
        dim: D, the embedding size.
        metric: ``cosine`` or ``euclidean``.
        scale: multiplies the scores (softmax temperature).
    """

    def __init__(self, num_classes: int, dim: int, metric: str = "cosine", scale: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        if metric not in METRICS:
            raise TLKerasError(f"metric={metric!r} is not valid; choose one of {', '.join(METRICS)}")
        self.num_classes, self.dim, self.metric, self.scale = int(num_classes), int(dim), str(metric), float(scale)

    def build(self, input_shape):
        self.prototypes = self.add_weight(name="prototypes", shape=(self.num_classes, self.dim), initializer="zeros", trainable=False)
        self.center = self.add_weight(name="center", shape=(self.dim,), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x):
        x = tf.cast(x, tf.float32) - self.center
        if self.metric == "cosine":
            x = tf.math.l2_normalize(x, axis=-1)
            return self.scale * tf.matmul(x, self.prototypes, transpose_b=True)
        sq = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
        cross = tf.matmul(x, self.prototypes, transpose_b=True)
        psq = tf.reduce_sum(tf.square(self.prototypes), axis=-1)[None, :]
        return -self.scale * (sq - 2.0 * cross + psq)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim,
                "metric": self.metric, "scale": self.scale}


def embed_images(extractor, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled features of uint8 images (N x S x S x 3) from a feature extractor, as float32."""
    from tlkeras.core.metrics import predict

    images = np.asarray(images)
    size = tuple(int(d) for d in extractor.inputs[0].shape[1:3])
    if images.ndim != 4 or tuple(images.shape[1:3]) != size or images.shape[-1] != 3:
        raise TLKerasError(f"images have shape {images.shape}; the backbone takes N x {size[0]} x {size[1]} x 3 (resize them first)")
    if len(images) == 0:
        raise TLKerasError("no images given")
    return predict(extractor, images, batch_size)


class FewShotClassifier:
    """A feature extractor plus a :class:`PrototypeClassifier`: images in, classes out.

    Build it from a trained run (:meth:`from_run`), any tlkeras model (:meth:`from_model`) or
    a backbone config (:meth:`from_backbone`), then :meth:`fit` on a few labelled images and
    :meth:`add_class` more classes later.
    """

    def __init__(self, extractor, classifier: PrototypeClassifier | None = None, *, batch_size: int = 64):
        self.extractor = extractor
        self.classifier = classifier
        self.batch_size = batch_size

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_model(cls, model, **kwargs) -> "FewShotClassifier":
        """Uses the pooled features (``head_pool``) of a tlkeras model as embeddings."""
        from tlkeras.core.models import feature_extractor

        return cls(feature_extractor(model), **kwargs)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kwargs) -> "FewShotClassifier":
        """Uses the backbone of a trained run (``runs/<name>``)."""
        from tlkeras.core.loading import load_run_model

        return cls.from_model(load_run_model(run_dir), **kwargs)

    @classmethod
    def from_backbone(cls, model_cfg, image_size: int | None = None, **kwargs) -> "FewShotClassifier":
        """Uses a pretrained backbone (``ModelConfig``: backbone, weights, alpha) without training."""
        from tlkeras.core.models import build_model

        return cls.from_model(build_model(model_cfg, 2, image_size), **kwargs)

    @property
    def image_size(self) -> int:
        return int(self.extractor.inputs[0].shape[1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of uint8 images at :attr:`image_size`."""
        return embed_images(self.extractor, images, self.batch_size)

    def fit(self, images: np.ndarray, labels, class_names: Sequence[str] | None = None, **kwargs) -> "FewShotClassifier":
        """Builds the prototypes from labelled support images (see :meth:`PrototypeClassifier.fit`)."""
        self.classifier = PrototypeClassifier.fit(self.embed(images), labels, class_names, **kwargs)
        return self

    def _need(self) -> PrototypeClassifier:
        if self.classifier is None:
            raise TLKerasError("no prototypes yet; call fit() with labelled support images first")
        return self.classifier

    def add_class(self, name: str, images: np.ndarray) -> int:
        """Adds a class from a handful of images; returns its index. Nothing is retrained."""
        return self._need().add_class(name, self.embed(images))

    def add_examples(self, name: str, images: np.ndarray) -> None:
        self._need().add_examples(name, self.embed(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._need().predict_proba(self.embed(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._need().predict(self.embed(images))

    @property
    def class_names(self) -> list[str]:
        return list(self._need().class_names)

    # -- one Keras model ----------------------------------------------------------------------

    def to_keras(self):
        """One Keras model: raw pixels -> backbone -> ``head_prototypes`` -> ``head_output`` (softmax).

        The prototypes (and center) are constants of a :class:`PrototypeLayer`; the model is a
        snapshot: classes added later need a new ``to_keras()``.
        """
        clf = self._need()
        layer = PrototypeLayer(clf.num_classes, clf.dim, clf.metric, clf.scale, name="head_prototypes")
        scores = layer(self.extractor.output)
        probs = keras.layers.Activation("softmax", dtype="float32", name="head_output")(scores)
        model = keras.Model(self.extractor.inputs, probs, name="tlkeras_prototypes")
        center = clf.center if clf.center is not None else np.zeros(clf.dim)
        layer.set_weights([clf.prototypes, center.astype(np.float32)])
        return model

    # -- persistence --------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes ``model.keras`` (the :meth:`to_keras` model), ``prototypes.npz``, ``labels.txt``
        and ``fewshot.json`` into ``directory`` (atomically; it must not exist unless ``overwrite``)."""
        from tlkeras.runs import atomic_path, atomic_write_text, staged_directory, write_json

        clf = self._need()
        directory = Path(directory)
        with staged_directory(directory, overwrite=overwrite) as stage:
            with atomic_path(stage / "model.keras") as tmp:
                self.to_keras().save(tmp)
            clf.save(stage / "prototypes.npz")
            atomic_write_text(stage / "labels.txt", "\n".join(clf.class_names) + "\n")
            write_json(stage / "fewshot.json", {"format": "tlkeras-prototypes", "image_size": self.image_size, **clf.to_dict()})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, **kwargs) -> "FewShotClassifier":
        """Reads a directory written by :meth:`save` (the extractor comes from its model.keras)."""
        from tlkeras.core.loading import load_run_model
        from tlkeras.core.models import feature_extractor

        directory = Path(directory)
        if not (directory / "prototypes.npz").is_file():
            raise TLKerasError(f"{directory} has no prototypes.npz; pass a directory written by FewShotClassifier.save")
        model = load_run_model(directory)
        return cls(feature_extractor(model), PrototypeClassifier.load(directory / "prototypes.npz"), **kwargs)


def export_fewshot(fewshot: FewShotClassifier, support_images: np.ndarray, support_labels, output_dir: str | os.PathLike,
                   options=None, *, eval_images: np.ndarray | None = None, eval_labels=None,
                   progress: Callable[[str], None] | None = None):
    """Exports the prototype classifier as a tlkeras TFLite bundle (:func:`tlkeras.export.bundle.export_model`).

    The support images calibrate int8 variants; the evaluation images (default: the support
    images) verify every variant on LiteRT against the Keras model.

    Args:
        fewshot: a fitted :class:`FewShotClassifier`.
        support_images, support_labels: images and class indices over ``fewshot.class_names``.
        output_dir: the bundle directory.
        options: a :class:`tlkeras.export.bundle.ExportOptions` (default: ``float32`` only).

    Returns:
        The :class:`tlkeras.export.result.ExportResult`.
    """
    from tlkeras.core.data import DataBundle, Split
    from tlkeras.export.bundle import ExportOptions, export_model

    clf = fewshot._need()  # noqa: SLF001
    options = options or ExportOptions(variants=("float32",))
    support_images = np.asarray(support_images)
    support_labels = np.asarray(support_labels).astype(np.int64).reshape(-1)
    if eval_images is None:
        eval_images, eval_labels = support_images, support_labels
    eval_labels = np.asarray(eval_labels).astype(np.int64).reshape(-1)
    bundle = DataBundle(Split(support_images, support_labels), Split(np.asarray(eval_images), eval_labels), None,
                        list(clf.class_names), "softmax", fewshot.image_size, [], "few-shot support set")
    source = {"kind": "prototypes", "metric": clf.metric, "shots": clf.counts.tolist()}
    return export_model(fewshot.to_keras(), bundle, output_dir, options, source_run=source, progress=progress)


# ---------------------------------------------------------------------------------------------
# Episodes


def sample_episodes(labels: np.ndarray, n_way: int = 5, k_shot: int = 5, n_query: int = 15, episodes: int = 200,
                    seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields N-way K-shot episodes drawn from a labelled set.

    Each episode picks ``n_way`` classes, then ``k_shot`` support and ``n_query`` query images per
    class, disjoint. Yields ``(support_index, support_label, query_index, query_label)`` with
    labels renumbered ``0..n_way-1``.

    Raises:
        TLKerasError: fewer than ``n_way`` classes with ``k_shot + n_query`` images each.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    need = k_shot + n_query
    eligible = [c for c in np.unique(labels) if np.sum(labels == c) >= need]
    if n_way < 2 or k_shot < 1 or n_query < 1:
        raise TLKerasError("episodes need n_way >= 2, k_shot >= 1 and n_query >= 1")
    if len(eligible) < n_way:
        raise TLKerasError(f"{len(eligible)} classes have {need} images (k_shot + n_query); {n_way}-way episodes need {n_way}")
    for _ in range(episodes):
        classes = rng.choice(eligible, n_way, replace=False)
        s_idx, s_lab, q_idx, q_lab = [], [], [], []
        for new, c in enumerate(classes):
            pick = rng.choice(np.flatnonzero(labels == c), need, replace=False)
            s_idx.append(pick[:k_shot])
            q_idx.append(pick[k_shot:])
            s_lab += [new] * k_shot
            q_lab += [new] * n_query
        yield np.concatenate(s_idx), np.array(s_lab), np.concatenate(q_idx), np.array(q_lab)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal-approximation interval (1.96 standard errors)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def evaluate_episodes(embeddings: np.ndarray, labels: np.ndarray, *, n_way: int = 5, k_shot: int = 5, n_query: int = 15,
                      episodes: int = 200, seed: int = 0, metric: str = "cosine", center: bool = False,
                      baselines: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] | None = None) -> dict[str, Any]:
    """N-way K-shot accuracy of prototypes (and optional baselines) over random episodes.

    Args:
        embeddings, labels: a labelled evaluation set (e.g. the test split's embeddings).
        baselines: ``{name: fn(support_x, support_y, query_x) -> predicted labels}`` run on the
            same episodes (e.g. a logistic regression fitted on the shots).

    Returns:
        ``{method: {"mean", "ci95", "accuracies"}}`` plus ``"settings"``.
    """
    x = _check_embeddings(embeddings)
    methods: dict[str, list[float]] = {"prototypes": []}
    for name in baselines or {}:
        methods[name] = []
    for s, sy, q, qy in sample_episodes(labels, n_way, k_shot, n_query, episodes, seed):
        clf = PrototypeClassifier.fit(x[s], sy, metric=metric, center=center)
        methods["prototypes"].append(float(np.mean(clf.predict(x[q]) == qy)))
        for name, fn in (baselines or {}).items():
            methods[name].append(float(np.mean(np.asarray(fn(x[s], sy, x[q])) == qy)))
    result: dict[str, Any] = {"settings": {"n_way": n_way, "k_shot": k_shot, "n_query": n_query, "episodes": episodes,
                                           "seed": seed, "metric": metric, "center": center}}
    for name, accs in methods.items():
        mean, ci = mean_interval(accs)
        result[name] = {"mean": mean, "ci95": ci, "accuracies": accs}
    return result
