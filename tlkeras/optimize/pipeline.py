"""Compression with tensorflow-model-optimization: pruning, clustering, QAT and their combinations.

A trained run directory goes in; a NEW run directory with a compressed model comes out, ready for
``python -m tlkeras.export``. The stages run in a fixed order and each one fine-tunes with the
run's own phase-2 settings (learning rate ``phase1_lr * phase2_lr_factor``, ``phase2_epochs``),
data pipeline (:func:`tlkeras.data.make_dataset`) and callbacks (early stopping on val loss that
keeps the best weights, TensorBoard logs):

1. **prune** (:func:`prune`): magnitude pruning of Conv2D/Dense kernels to a target sparsity with a
   polynomial-decay or constant schedule (optionally the structured 2:4 pattern), then
   ``strip_pruning``.
2. **cluster** (:func:`cluster`): weight clustering to N shared values per layer, then
   ``strip_clustering``; after pruning it preserves the zeros (sparsity-preserving clustering).
3. **QAT** (:func:`quantize_aware`): quantization-aware training. After pruning it uses the
   prune-preserving scheme (PQAT), after clustering the cluster-preserving one (CQAT), after both
   PCQAT, so sparsity and clusters survive quantization. Layers QAT cannot handle stay float and
   are listed in the report.

Every optimized run gets a report (``optimization.json`` and ``optimization.md``): sparsity per
layer and overall, unique weights per clustered layer, accuracy before and after, gzipped sizes of
the Keras model and of the int8 TFLite model, and int8 accuracy (QAT vs. post-training int8).

Our models are flat functional graphs (see :mod:`tlkeras.models`), which is what tfmot needs. The
``Rescaling`` preprocessing layer has no weights: pruning and clustering skip it, QAT quantizes
only its output (tfmot's ``Default8BitOutputQuantizeConfig``), so the int8 model is integer from
the first op. A TF-Hub backbone is one opaque layer: it can only be compressed with
``head_only=True``.

Saving QAT models: tfmot 0.8.1 models do not survive a ``.keras`` round trip as built by
``quantize_apply`` (``QuantizeLayer`` is built twice on load, and wrappers list their variables in
another order than a reloaded model; tensorflow/model-optimization PR #1123, unmerged). tlkeras
therefore rebuilds the trained QAT model the way the loader will, copies the variables by name,
and saves that; load it inside :func:`keras_load_scope` (or with :func:`load_model`).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras, tf
from tlkeras._backend import tfmot as _tfmot_module
from tlkeras.config import RunConfig, load_config, save_config
from tlkeras.core.data import DataBundle, class_weights, load_data, make_dataset
from tlkeras.core.loading import keras_load_scope, load_model, tfmot_internal
from tlkeras.core.metrics import compute_metrics, predict
from tlkeras.core.plots import write_reports
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path, atomic_write_text, read_labels, staged_directory, write_json

__all__ = [
    "PruningOptions",
    "ClusteringOptions",
    "QATOptions",
    "FineTuneOptions",
    "StageResult",
    "OptimizeResult",
    "prune",
    "cluster",
    "quantize_aware",
    "optimize_run",
    "weight_sparsity",
    "unique_weights",
    "convert_int8",
    "evaluate_tflite",
    "tflite_weight_sparsity",
    "gzipped_size",
    "keras_load_scope",
    "load_model",
    "save_model",
]

PRUNE_SCHEDULES = ("polynomial", "constant")
PRUNE_STRUCTURES = ("unstructured", "2:4")
CENTROID_INITS = {
    "kmeans++": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density": "DENSITY_BASED",
    "random": "RANDOM",
}
REPORT_JSON = "optimization.json"
REPORT_MD = "optimization.md"
INT8_TFLITE = "model_int8.tflite"


def _tfmot():
    return _tfmot_module()


# ---------------------------------------------------------------------------------------------
# Options


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]


@dataclass
class PruningOptions:
    """Magnitude pruning.

    Attributes:
        target_sparsity: share of zero weights in every pruned kernel at the end, in [0, 1).
        schedule: ``polynomial`` (sparsity ramps from ``initial_sparsity`` to the target, cubic
            decay, as in tfmot's guide) or ``constant`` (the target from the first step).
        initial_sparsity: polynomial schedule's starting sparsity.
        begin_fraction: share of the fine-tuning steps before pruning starts.
        end_fraction: share of the fine-tuning steps at which the target is reached; the rest of
            the fine-tuning lets the network recover at the final sparsity.
        frequency: steps between mask updates (None: about 8 updates over the ramp).
        structure: ``unstructured`` or ``2:4`` (two zeros in every four consecutive input weights,
            the pattern sparse tensor cores and XNNPack accelerate; always 50% sparsity; layers
            whose input depth is not a multiple of 4 are left dense).
        min_weights: kernels with fewer weights stay dense (small layers save nothing and are
            often the most sensitive).
        skip_layers: names of layers never to prune.
        epochs: fine-tuning epochs of the pruning stage (default: the fine-tuning epochs). The
            network has to recover while and after the sparsity ramps up, so give it more epochs
            than phase 2 had (BENCHMARKS.md measures 16 and 32 on flowers5).
    """

    target_sparsity: float = 0.5
    schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    begin_fraction: float = 0.0
    end_fraction: float = 0.6
    frequency: int | None = None
    structure: str = "unstructured"
    min_weights: int = 0
    skip_layers: list[str] = field(default_factory=list)
    epochs: int | None = None

    def validate(self) -> "PruningOptions":
        """Checks the options; raises TLKerasError naming the bad one. Returns self."""
        if not 0.0 <= float(self.target_sparsity) < 1.0:
            raise TLKerasError(f"target sparsity must be in [0, 1), got {self.target_sparsity}; e.g. --prune 0.5 for half the weights zero")
        if self.schedule not in PRUNE_SCHEDULES:
            raise TLKerasError(f"pruning schedule {self.schedule!r} is not valid; choose polynomial or constant")
        if self.structure not in PRUNE_STRUCTURES:
            raise TLKerasError(f"pruning structure {self.structure!r} is not valid; choose unstructured or 2:4")
        if self.structure == "2:4" and abs(float(self.target_sparsity) - 0.5) > 1e-9:
            raise TLKerasError(f"2:4 structured sparsity is always 50%; drop the target sparsity {self.target_sparsity} or set it to 0.5")
        if not 0.0 <= float(self.initial_sparsity) <= float(self.target_sparsity):
            raise TLKerasError(f"initial sparsity must be in [0, target sparsity {self.target_sparsity}], got {self.initial_sparsity}")
        if not 0.0 <= float(self.begin_fraction) < float(self.end_fraction) <= 1.0:
            raise TLKerasError(
                f"pruning must begin before it ends within the fine-tuning: need 0 <= begin ({self.begin_fraction}) "
                f"< end ({self.end_fraction}) <= 1"
            )
        if self.frequency is not None and int(self.frequency) < 1:
            raise TLKerasError(f"pruning frequency must be >= 1 step, got {self.frequency}")
        if int(self.min_weights) < 0:
            raise TLKerasError(f"min_weights must be >= 0, got {self.min_weights}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise TLKerasError(f"pruning epochs must be >= 1, got {self.epochs}")
        self.skip_layers = _names(self.skip_layers)
        return self


@dataclass
class ClusteringOptions:
    """Weight clustering.

    Attributes:
        clusters: number of shared values (centroids) per clustered kernel, >= 2.
        init: centroid initialization: ``kmeans++`` (tfmot's default), ``linear`` (evenly spaced
            between min and max, keeps outliers), ``density`` (by the weights' CDF) or ``random``.
        per_channel: cluster each output channel of Conv2D kernels separately (N values per
            channel; matches per-channel int8 quantization, better accuracy).
        skip_layers: names of layers never to cluster.
        epochs: fine-tuning epochs of the clustering stage (default: the fine-tuning epochs).
    """

    clusters: int = 16
    init: str = "kmeans++"
    per_channel: bool = False
    skip_layers: list[str] = field(default_factory=list)
    epochs: int | None = None

    def validate(self) -> "ClusteringOptions":
        """Checks the options; raises TLKerasError naming the bad one. Returns self."""
        if int(self.clusters) != self.clusters or int(self.clusters) < 2:
            raise TLKerasError(f"the number of clusters must be an integer >= 2, got {self.clusters}; e.g. --cluster 16")
        self.clusters = int(self.clusters)
        if self.init not in CENTROID_INITS:
            raise TLKerasError(f"centroid init {self.init!r} is not valid; choose one of {', '.join(CENTROID_INITS)}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise TLKerasError(f"clustering epochs must be >= 1, got {self.epochs}")
        self.skip_layers = _names(self.skip_layers)
        return self


@dataclass
class QATOptions:
    """Quantization-aware training (8-bit weights and activations, tfmot's default scheme).

    Attributes:
        float_layers: names of layers to keep in float (besides those QAT cannot handle).
        epochs: fine-tuning epochs of the QAT stage (default: the fine-tuning epochs).
    """

    float_layers: list[str] = field(default_factory=list)
    epochs: int | None = None

    def validate(self) -> "QATOptions":
        """Checks and normalizes the options. Returns self."""
        if self.epochs is not None and int(self.epochs) < 1:
            raise TLKerasError(f"QAT epochs must be >= 1, got {self.epochs}")
        self.float_layers = _names(self.float_layers)
        return self


@dataclass
class FineTuneOptions:
    """How each compression stage fine-tunes; None takes the run's phase-2 setting.

    Attributes:
        epochs: fine-tuning epochs per stage (default: the run's ``phase2_epochs``, or 2 when the
            run skipped phase 2).
        learning_rate: default ``phase1_lr * phase2_lr_factor`` with the run's schedule.
        warmup_epochs: linear learning-rate warm-up (default: the run's ``warmup_epochs``).
        batch_size: default: the run's batch size.
        augment: augmentation preset (default: the run's).
        patience: early-stopping patience in epochs (default: the run's; 0 keeps the best epoch
            without stopping early).
        verbose: Keras progress display (default: the run's).
        head_only: compress and train only the head layers (``head_*``); needed for a TF-Hub
            backbone, which is one opaque layer.
        self_distill: weight ``w`` in [0, 1] of the uncompressed model's own predictions in the
            fine-tuning targets: ``(1 - w) * labels + w * softmax predictions`` (softmax heads).
            The compressed model is pulled towards the function it started from rather than
            re-fitted to a few hundred labels, which is what loses accuracy on small data. The
            default 1.0 uses the predictions only; on flowers5 it cut the accuracy lost by 50%
            pruning from 7.3 to 4.0 points and by QAT from 4.0 to 1.3 (BENCHMARKS.md). 0 trains
            on the labels alone.
    """

    epochs: int | None = None
    learning_rate: float | None = None
    warmup_epochs: float | None = None
    batch_size: int | None = None
    augment: str | None = None
    patience: int | None = None
    verbose: int | None = None
    head_only: bool = False
    self_distill: float = 1.0

    def validate(self) -> "FineTuneOptions":
        """Checks the options; raises TLKerasError naming the bad one. Returns self."""
        if not 0.0 <= float(self.self_distill) <= 1.0:
            raise TLKerasError(f"self-distillation weight must be in [0, 1], got {self.self_distill}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise TLKerasError(f"fine-tuning epochs must be >= 1, got {self.epochs}")
        if self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise TLKerasError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.warmup_epochs is not None and float(self.warmup_epochs) < 0:
            raise TLKerasError(f"warm-up epochs must be >= 0, got {self.warmup_epochs}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise TLKerasError(f"batch size must be >= 1, got {self.batch_size}")
        if self.augment is not None and self.augment not in ("off", "light", "strong"):
            raise TLKerasError(f"augment={self.augment!r} is not valid; choose off, light or strong")
        if self.patience is not None and int(self.patience) < 0:
            raise TLKerasError(f"patience must be >= 0, got {self.patience}")
        return self

    def resolve(self, config: RunConfig) -> dict[str, Any]:
        """The effective settings for ``config``'s run (phase-2 values where not overridden)."""
        tc = config.train
        epochs = self.epochs if self.epochs is not None else (tc.phase2_epochs or 2)
        return {
            "epochs": int(epochs),
            "learning_rate": float(self.learning_rate if self.learning_rate is not None else tc.phase1_lr * tc.phase2_lr_factor),
            "schedule": tc.schedule,
            "warmup_epochs": float(self.warmup_epochs if self.warmup_epochs is not None else getattr(tc, "warmup_epochs", 0.0)),
            "batch_size": int(self.batch_size or config.data.batch_size),
            "augment": self.augment if self.augment is not None else config.data.augment,
            "patience": int(self.patience if self.patience is not None else tc.early_stopping_patience),
            "verbose": int(self.verbose if self.verbose is not None else tc.verbose),
            "head_only": bool(self.head_only),
            "self_distill": float(self.self_distill),
        }


@dataclass
class StageResult:
    """What one compression stage made.

    Attributes:
        model: the fine-tuned model, wrappers stripped (QAT: the QAT model, ready to convert).
        stage: ``prune``, ``cluster`` or ``qat``.
        info: what the stage did (layers touched, schedule, scheme, float layers...).
        history: per-epoch fine-tuning metrics.
        seconds: wall time of the stage.
        wrapped: the trained model with tfmot's wrappers, before stripping (prune, cluster) or
            before the rebuild for saving (QAT).
    """

    model: Any
    stage: str
    info: dict[str, Any]
    history: dict[str, list]
    seconds: float
    wrapped: Any = None


@dataclass
class OptimizeResult:
    """What :func:`optimize_run` made.

    Attributes:
        run_dir: the new run directory (None when not written).
        model: the optimized Keras model.
        report: the report (also ``optimization.json`` in the run directory).
        stages: the stage results in order.
        tflite: the int8 TFLite flatbuffer (None with ``tflite=False``).
    """

    run_dir: Path | None
    model: Any
    report: dict[str, Any]
    stages: list[StageResult]
    tflite: bytes | None = None


# ---------------------------------------------------------------------------------------------
# Layers: which ones a stage touches


def _is_hub(layer) -> bool:
    return layer.name == "backbone_hub" or type(layer).__name__ == "HubBackbone"


def _check_hub(model, head_only: bool, verb: str) -> None:
    hub = [l.name for l in model.layers if _is_hub(l)]
    if hub and not head_only:
        raise TLKerasError(
            f"the backbone is a TF-Hub model (layer {hub[0]}), one opaque layer that tfmot cannot {verb} "
            f"layer by layer; pass --head-only (head_only=True) to compress only the head layers"
        )


def _in_scope(layer, head_only: bool) -> bool:
    """Whether a stage may touch ``layer``: never inputs or preprocessing; with head_only, the head."""
    if isinstance(layer, keras.layers.InputLayer) or layer.name.startswith("preprocess_"):
        return False
    return layer.name.startswith("head_") if head_only else True


def _set_trainable(model, head_only: bool) -> None:
    """Opens the layers a stage fine-tunes: the head, and with head_only off the whole backbone.

    BatchNorm layers stay frozen (inference mode, moving statistics), as in phase 2, and so do the
    preprocessing layers. Side effect: changes ``trainable`` flags (recompile afterwards).
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.BatchNormalization) or layer.name.startswith("preprocess_"):
            layer.trainable = False
        else:
            layer.trainable = _in_scope(layer, head_only)


def _kernel_names(layer) -> list[str]:
    """Names of the weights of ``layer`` that hold most of its parameters (kernels)."""
    names = []
    for attr in ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"):
        if getattr(layer, attr, None) is not None:
            names.append(attr)
    return names


def _prunable_weight_names(layer) -> list[str] | None:
    """Weights tfmot prunes in ``layer``: [] for supported layers without any, None if unsupported."""
    registry = tfmot_internal("sparsity.keras.prune_registry").PruneRegistry
    prunable = _tfmot().sparsity.keras.PrunableLayer
    if isinstance(layer, prunable) or hasattr(layer, "get_prunable_weights"):
        return [w.name for w in layer.get_prunable_weights()]
    if not registry.supports(layer):
        return None
    try:
        return list(registry._weight_names(layer))  # the registry's own table; public API has none
    except Exception:  # noqa: BLE001 - RNN and attention layers use other tables
        return ["kernel"]


def _clusterable_weight_names(layer) -> list[str] | None:
    """Weights tfmot clusters in ``layer``: [] when none, None if the layer is unsupported."""
    registry = tfmot_internal("clustering.keras.clustering_registry").ClusteringRegistry
    clusterable = _tfmot().clustering.keras.ClusterableLayer
    if isinstance(layer, clusterable):
        return [name for name, _ in layer.get_clusterable_weights()]
    # The registry's class table, not ``supports()``: that one accepts any layer without trainable
    # weights, so a frozen layer of an unsupported type would pass.
    table = getattr(registry, "_LAYERS_WEIGHTS_MAP", {})
    if layer.__class__ in table:
        return list(table[layer.__class__])
    special = set(getattr(registry, "_SUPPORTED_RNN_LAYERS", ())) | set(getattr(registry, "_SUPPORTED_MHA_LAYERS", ()))
    if layer.__class__ in special:
        return ["kernel"]
    return None


# ---------------------------------------------------------------------------------------------
# Fine-tuning shared by the stages


def _stage_settings(finetune: FineTuneOptions, config: RunConfig, epochs: int | None) -> dict[str, Any]:
    ft = finetune.resolve(config)
    if epochs is not None:
        ft["epochs"] = int(epochs)
    return ft


def _compile(model, config: RunConfig, num_outputs: int, learning_rate) -> None:
    from tlkeras.train.engine import compile_model

    # XLA off: tfmot's masks and fake-quant ops are not all XLA-compilable.
    compile_model(model, config, num_outputs, learning_rate, jit=False)


def _steps_per_epoch(data: DataBundle, batch_size: int) -> int:
    return max(1, math.ceil(len(data.train) / batch_size))


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
    from tlkeras.train.engine import learning_rate_schedule

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


# ---------------------------------------------------------------------------------------------
# Pruning


def _pruning_schedule(options: PruningOptions, steps: int):
    """Builds the tfmot schedule; returns (schedule, info) with the steps it uses.

    tfmot applies a mask update only every ``frequency`` steps from ``begin_step``; the end step is
    put on that grid, or the final sparsity would never be applied.
    """
    sk = _tfmot().sparsity.keras
    last = max(0, steps - 1)
    begin = min(int(round(options.begin_fraction * steps)), last)
    ramp_end = min(max(begin + 1, int(round(options.end_fraction * steps)) - 1), last)
    span = ramp_end - begin
    frequency = int(options.frequency or max(1, span // 8))
    if span >= 1:
        end = begin + frequency * max(1, span // frequency)
        if end > last:
            end = begin + frequency * ((last - begin) // frequency)
    else:
        end = begin
    if options.schedule == "constant" or end <= begin:
        schedule = sk.ConstantSparsity(float(options.target_sparsity), begin_step=begin, end_step=end if end > begin else -1, frequency=frequency)
        kind = "constant"
    else:
        schedule = sk.PolynomialDecay(initial_sparsity=float(options.initial_sparsity), final_sparsity=float(options.target_sparsity),
                                      begin_step=begin, end_step=end, power=3, frequency=frequency)
        kind = "polynomial"
    return schedule, {"schedule": kind, "begin_step": begin, "end_step": end, "frequency": frequency, "total_steps": steps}


def _m_by_n_ok(layer) -> bool:
    """Whether the 2:4 pattern fits the layer: groups of 4 along the input depth."""
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) in (2, 4) and int(kernel.shape[-2]) % 4 == 0


def _prune_targets(model, options: PruningOptions, head_only: bool) -> tuple[list[str], dict[str, str]]:
    targets, skipped, unsupported = [], {}, []
    for layer in model.layers:
        if not _in_scope(layer, head_only) or not layer.weights:
            continue
        names = _prunable_weight_names(layer)
        if names is None:
            unsupported.append(layer.name)
            continue
        if not names:
            continue  # BatchNorm, DepthwiseConv2D: supported, nothing tfmot prunes
        size = sum(int(np.prod(w.shape)) for w in layer.weights if w.name.split("/")[-1].split(":")[0] in names)
        if layer.name in options.skip_layers:
            skipped[layer.name] = "skip_layers"
        elif size < options.min_weights:
            skipped[layer.name] = f"fewer than {options.min_weights} weights"
        elif options.structure == "2:4" and not _m_by_n_ok(layer):
            skipped[layer.name] = "input depth not a multiple of 4 (2:4 pattern)"
        else:
            targets.append(layer.name)
    unsupported = [n for n in unsupported if n not in options.skip_layers]
    if unsupported:
        raise TLKerasError(_unsupported_message(model, unsupported, "prune", head_only))
    return targets, skipped


def _unsupported_message(model, names: list[str], verb: str, head_only: bool) -> str:
    kinds = sorted({type(model.get_layer(n)).__name__ for n in names})
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    hint = "pass them to --skip-layers" + ("" if head_only else " or compress the head only with --head-only")
    return f"tfmot cannot {verb} layer(s) {shown} ({', '.join(kinds)}); {hint}"


def prune(model, data: DataBundle, config: RunConfig, options: PruningOptions | None = None, finetune: FineTuneOptions | None = None, *,
          callbacks: Sequence | None = None, log_dir: Path | None = None) -> StageResult:
    """Prunes ``model`` to a target sparsity while fine-tuning, then strips the pruning wrappers.

    Args:
        model: a trained tlkeras model (flat functional graph).
        data: the run's data; ``data.train`` is fitted, ``data.val`` drives early stopping.
        config: the run's config (phase-2 learning rate and epochs, loss, optimizer, seed).
        options: pruning settings (default: 50% with a polynomial schedule).
        finetune: fine-tuning overrides (default: the run's phase-2 settings).
        callbacks: extra Keras callbacks.
        log_dir: TensorBoard log folder (None: no logs).

    Returns:
        A StageResult whose model has sparse kernels and no wrappers (same layers as ``model``).

    Raises:
        TLKerasError: bad options, a TF-Hub backbone without head_only, layers tfmot cannot prune.

    Side effects: changes ``model``'s weights and ``trainable`` flags (the returned model shares
    its layers).
    """
    options = (options or PruningOptions()).validate()
    fto = (finetune or FineTuneOptions()).validate()
    ft = _stage_settings(fto, config, options.epochs)
    _check_hub(model, ft["head_only"], "prune")
    soft = _self_targets(model, data, ft)  # before tfmot wraps the model
    targets, skipped = _prune_targets(model, options, ft["head_only"])
    if not targets:
        raise TLKerasError("no layer left to prune (all skipped or unsupported); lower --prune-min-weights or --skip-layers")
    start = time.perf_counter()
    sk = _tfmot().sparsity.keras
    steps = _steps_per_epoch(data, ft["batch_size"]) * ft["epochs"]
    schedule, sched_info = _pruning_schedule(options, steps)
    params: dict[str, Any] = {"pruning_schedule": schedule}
    if options.structure == "2:4":
        params["sparsity_m_by_n"] = (2, 4)
    _set_trainable(model, ft["head_only"])
    chosen = set(targets)

    def wrap(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name in chosen:
            return sk.prune_low_magnitude(layer, **params)
        return layer  # the same layer object: its weights are kept

    try:
        wrapped = keras.models.clone_model(model, clone_function=wrap)
    except ValueError as exc:
        raise TLKerasError(f"tfmot cannot prune this model: {str(exc).splitlines()[0][:200]}") from None
    # The target sparsity is reached at end_step; early stopping may only restore epochs after it.
    monitor_from = min(ft["epochs"], (sched_info["end_step"] // _steps_per_epoch(data, ft["batch_size"])) + 1)
    extra = [sk.UpdatePruningStep()]
    if log_dir is not None:
        extra.append(sk.PruningSummaries(log_dir=str(log_dir / "prune"), profile_batch=0, write_graph=False))
    history = _fine_tune(wrapped, data, config, ft, stage="prune", extra_callbacks=extra + list(callbacks or []),
                         log_dir=log_dir, monitor_from_epoch=monitor_from, targets=soft)
    stripped = sk.strip_pruning(wrapped)
    _recompile_fresh(stripped, config, data.num_outputs, ft)
    info = {
        "target_sparsity": float(options.target_sparsity),
        "structure": options.structure,
        "pruned_layers": targets,
        "dense_layers": skipped,
        **sched_info,
        "finetune": ft,
    }
    return StageResult(stripped, "prune", info, history, time.perf_counter() - start, wrapped)


# ---------------------------------------------------------------------------------------------
# Clustering


def _cluster_targets(model, options: ClusteringOptions, head_only: bool) -> tuple[list[str], dict[str, str]]:
    targets, skipped, unsupported = [], {}, []
    for layer in model.layers:
        if not _in_scope(layer, head_only) or not layer.weights:
            continue
        names = _clusterable_weight_names(layer)
        if names is None:
            unsupported.append(layer.name)
            continue
        if not names:
            continue
        kernel = getattr(layer, names[0], None)
        per = int(np.prod(kernel.shape[:-1])) if (options.per_channel and kernel is not None and isinstance(layer, keras.layers.Conv2D)) else (
            int(np.prod(kernel.shape)) if kernel is not None else 0)
        if layer.name in options.skip_layers:
            skipped[layer.name] = "skip_layers"
        elif per <= options.clusters:
            skipped[layer.name] = f"{per} weights, not more than {options.clusters} clusters"
        else:
            targets.append(layer.name)
    unsupported = [n for n in unsupported if n not in options.skip_layers]
    if unsupported:
        raise TLKerasError(_unsupported_message(model, unsupported, "cluster", head_only))
    if not targets:
        raise TLKerasError(f"no layer has more than {options.clusters} weights to cluster; use fewer clusters")
    return targets, skipped


def cluster(model, data: DataBundle, config: RunConfig, options: ClusteringOptions | None = None, finetune: FineTuneOptions | None = None, *,
            preserve_sparsity: bool = False, callbacks: Sequence | None = None, log_dir: Path | None = None) -> StageResult:
    """Clusters the kernels of ``model`` to N shared values while fine-tuning, then strips.

    Args:
        model: a trained (possibly pruned) tlkeras model.
        data: the run's data.
        config: the run's config (phase-2 settings).
        options: clustering settings (default: 16 clusters, k-means++ initialization).
        finetune: fine-tuning overrides.
        preserve_sparsity: keep zero weights at zero (sparsity-preserving clustering, after
            pruning).
        callbacks: extra Keras callbacks.
        log_dir: TensorBoard log folder.

    Returns:
        A StageResult whose clustered kernels hold at most ``clusters`` distinct values (per output
        channel with ``per_channel``).

    Raises:
        TLKerasError: bad options, a TF-Hub backbone without head_only, unsupported layers.

    Side effects: changes ``model``'s weights and ``trainable`` flags.
    """
    options = (options or ClusteringOptions()).validate()
    fto = (finetune or FineTuneOptions()).validate()
    ft = _stage_settings(fto, config, options.epochs)
    _check_hub(model, ft["head_only"], "cluster")
    soft = _self_targets(model, data, ft)  # before tfmot wraps the model
    ck = _tfmot().clustering.keras
    targets, skipped = _cluster_targets(model, options, ft["head_only"])
    _set_trainable(model, ft["head_only"])
    start = time.perf_counter()
    init = getattr(ck.CentroidInitialization, CENTROID_INITS[options.init])
    chosen = set(targets)

    def wrap(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name not in chosen:
            return layer
        if options.per_channel and isinstance(layer, keras.layers.Conv2D):
            # tfmot's cluster_weights counts channels as the size of the layer's last trainable
            # weight, which is the kernel itself for a bias-free convolution (all of MobileNet's),
            # and then silently leaves the layer unclustered; the wrapper itself works.
            wrapper = tfmot_internal("clustering.keras.cluster_wrapper").ClusterWeights
            return wrapper(layer, options.clusters, init, preserve_sparsity, True)
        return ck.cluster_weights(layer, number_of_clusters=options.clusters, cluster_centroids_init=init,
                                  preserve_sparsity=preserve_sparsity, cluster_per_channel=options.per_channel)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = keras.models.clone_model(model, clone_function=wrap)
    except ValueError as exc:
        raise TLKerasError(f"tfmot cannot cluster this model: {str(exc).splitlines()[0][:200]}") from None
    history = _fine_tune(wrapped, data, config, ft, stage="cluster", extra_callbacks=list(callbacks or []), log_dir=log_dir, targets=soft)
    stripped = ck.strip_clustering(wrapped)
    _recompile_fresh(stripped, config, data.num_outputs, ft)
    info = {
        "clusters": options.clusters,
        "init": options.init,
        "per_channel": options.per_channel,
        "preserve_sparsity": preserve_sparsity,
        "clustered_layers": targets,
        "unclustered_layers": skipped,
        "finetune": ft,
    }
    return StageResult(stripped, "cluster", info, history, time.perf_counter() - start, wrapped)


# ---------------------------------------------------------------------------------------------
# Quantization-aware training


def _is_qat_model(model) -> bool:
    return any(type(l).__name__ in ("QuantizeWrapperV2", "QuantizeWrapper", "QuantizeLayer") for l in model.layers)


def save_model(model, path: str | os.PathLike) -> None:
    """Saves ``model`` to ``path`` (``.keras``) atomically; QAT models are saved so they reload.

    A QAT model is rebuilt from its config inside :func:`keras_load_scope` (the structure the
    loader will build) and its variables are copied over by name before saving.
    """
    if _is_qat_model(model) and not getattr(model, "_tlkeras_canonical_qat", False):
        model = _canonical_qat(model, model)
    with atomic_path(path) as tmp:
        model.save(tmp)


def _var_key(variable) -> str:
    # 'quant_conv1/kernel_min:0' and 'kernel_min:0' both become 'kernel_min'.
    return variable.name.split(":")[0].split("/")[-1]


def _copy_variables(source, target) -> None:
    """Copies every variable of ``target`` from the matching layer and variable of ``source``.

    Both models come from the same annotated graph, so their layers line up one to one (layer
    names may differ by a ``_1`` suffix Keras adds to auto-named layers such as QuantizeLayer).
    """
    if len(source.layers) != len(target.layers):
        raise TLKerasError("internal error: the QAT model and its rebuilt form have different layers")
    for src_layer, layer in zip(source.layers, target.layers):
        if getattr(src_layer, "layer", src_layer).name != getattr(layer, "layer", layer).name and type(src_layer).__name__ != type(layer).__name__:
            raise TLKerasError(f"internal error: layer {layer.name} does not match {src_layer.name} of the QAT model")
        by_key = {}
        for v in src_layer.weights:
            by_key.setdefault(_var_key(v), v)
        values = []
        for v in layer.weights:
            key = _var_key(v)
            if key not in by_key:  # e.g. 'quantize_layer_1_min' vs 'quantize_layer_min'
                key = next((k for k in by_key if k.endswith(key.split("_")[-1]) and by_key[k].shape == v.shape and k not in
                            {_var_key(w) for w in layer.weights}), None)
                if key is None:
                    raise TLKerasError(f"internal error: variable {v.name} of {layer.name} missing in the QAT model")
            value = by_key[key].numpy()
            if value.shape != tuple(v.shape) and value.size == 1:
                # CQAT quantizes clustered kernels per tensor; the default scheme per channel. One
                # range repeated for every channel quantizes exactly the same.
                value = np.broadcast_to(value.reshape(()), tuple(v.shape)).copy()
            values.append(value)
        if values:
            layer.set_weights(values)


def _canonical_qat(trained, default_qat) -> Any:
    """Rebuilds ``default_qat``'s structure the way ``load_model`` will, with ``trained``'s values."""
    with keras_load_scope():
        fresh = keras.models.model_from_json(default_qat.to_json())
    _copy_variables(trained, fresh)
    fresh._tlkeras_canonical_qat = True  # save_model() can save it as it is
    return fresh


def _bn_follows_conv(layer) -> bool:
    try:
        inbound = layer.inbound_nodes[0].inbound_layers
    except (IndexError, AttributeError):
        return False
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return len(inbound) == 1 and isinstance(inbound[0], (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))


def _annotate(model, scope: set[str], float_layers: set[str]) -> tuple[Any, list[str], list[str]]:
    """Marks the layers to quantize; returns (annotated model, quantized names, float names)."""
    qk = _tfmot().quantization.keras
    configs = tfmot_internal("quantization.keras.default_8bit.default_8bit_quantize_configs")
    registry = qk.default_8bit.Default8BitQuantizeRegistry()
    quantized, left_float = [], []

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        if layer.name not in scope or layer.name in float_layers:
            left_float.append(layer.name)
            return layer
        if isinstance(layer, keras.layers.Rescaling):
            # No weights; quantizing its output makes the int8 graph integer from the first op.
            quantized.append(layer.name)
            return qk.quantize_annotate_layer(layer, quantize_config=configs.Default8BitOutputQuantizeConfig())
        if isinstance(layer, keras.layers.BatchNormalization):
            if _bn_follows_conv(layer):  # folded into the convolution by tfmot's layout transforms
                quantized.append(layer.name)
                return qk.quantize_annotate_layer(layer)
            left_float.append(layer.name)
            return layer
        if registry.supports(layer):
            quantized.append(layer.name)
            return qk.quantize_annotate_layer(layer)
        left_float.append(layer.name)
        return layer

    annotated = keras.models.clone_model(model, clone_function=annotate)
    return annotated, quantized, left_float


def _scheme(preserve: str):
    qk = _tfmot().quantization.keras
    combine = _tfmot().experimental.combine if hasattr(_tfmot(), "experimental") else None
    if preserve == "none":
        return qk.default_8bit.Default8BitQuantizeScheme(), "default_8bit"
    if combine is None:  # pragma: no cover - tfmot >= 0.5 has it
        raise TLKerasError("this tfmot has no collaborative optimization; upgrade tensorflow-model-optimization")
    if preserve == "sparsity":
        return combine.Default8BitPrunePreserveQuantizeScheme(), "prune_preserve (PQAT)"
    if preserve == "clusters":
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False), "cluster_preserve (CQAT)"
    if preserve == "sparsity+clusters":
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True), "sparsity_cluster_preserve (PCQAT)"
    raise TLKerasError(f"preserve={preserve!r} is not valid; choose none, sparsity, clusters or sparsity+clusters")


def _quantize_apply(annotated, scheme):
    qk = _tfmot().quantization.keras
    try:
        with qk.quantize_scope():
            return qk.quantize_apply(annotated, scheme)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise TLKerasError(f"tfmot cannot quantize this model: {' '.join(str(exc).split())[:200]}; "
                           f"pass the offending layers to --float-layers") from None


def quantize_aware(model, data: DataBundle, config: RunConfig, options: QATOptions | None = None, finetune: FineTuneOptions | None = None, *,
                   preserve: str = "none", callbacks: Sequence | None = None, log_dir: Path | None = None) -> StageResult:
    """Quantization-aware training: fake-quantizes weights and activations while fine-tuning.

    Layers tfmot's 8-bit scheme does not support (and ``options.float_layers``) stay float and are
    listed in ``info["float_layers"]``.

    Args:
        model: a trained tlkeras model (stripped of pruning/clustering wrappers).
        data: the run's data.
        config: the run's config (phase-2 settings).
        options: QAT settings.
        finetune: fine-tuning overrides.
        preserve: ``none`` (plain QAT), ``sparsity`` (PQAT, after pruning), ``clusters`` (CQAT,
            after clustering) or ``sparsity+clusters`` (PCQAT).
        callbacks: extra Keras callbacks.
        log_dir: TensorBoard log folder.

    Returns:
        A StageResult whose model is a QAT model (QuantizeWrapperV2 layers) ready for
        ``tf.lite.TFLiteConverter``; save it with :func:`save_model`.

    Raises:
        TLKerasError: a TF-Hub backbone without head_only, a model tfmot cannot quantize.

    Side effects: changes ``model``'s weights and ``trainable`` flags.
    """
    options = (options or QATOptions()).validate()
    fto = (finetune or FineTuneOptions()).validate()
    ft = _stage_settings(fto, config, options.epochs)
    _check_hub(model, ft["head_only"], "quantize")
    soft = _self_targets(model, data, ft)  # before tfmot wraps the model
    scheme, scheme_name = _scheme(preserve)
    start = time.perf_counter()
    # Work on a copy: quantize_apply wraps layer objects, and the caller's float model must stay
    # usable (post-training int8 of the same model is the report's reference).
    work = _copy_model(model)
    _set_trainable(work, ft["head_only"])
    scope = {l.name for l in work.layers if _in_scope(l, ft["head_only"]) or (l.name.startswith("preprocess_") and not ft["head_only"])}
    missing = [n for n in options.float_layers if n not in {l.name for l in work.layers}]
    if missing:
        raise TLKerasError(f"float layer(s) {', '.join(missing)} are not in the model; check the names (see model.summary())")
    annotated, quantized, left_float = _annotate(work, scope, set(options.float_layers))
    qat = _quantize_apply(annotated, scheme)
    history = _fine_tune(qat, data, config, ft, stage="qat", extra_callbacks=list(callbacks or []), log_dir=log_dir, targets=soft)
    if preserve in ("clusters", "sparsity+clusters"):
        qat = _tfmot().experimental.combine.strip_clustering_cqat(qat)
    # The saved form: the same graph rebuilt from its config the way the loader builds it, with the
    # trained variables copied over. The preserving schemes serialize as tfmot's default 8-bit
    # configs, so PQAT/CQAT models come back as default QAT models; their extra variables (masks,
    # centroids) are dropped, the kernels already hold the sparse/clustered values.
    final = _canonical_qat(qat, qat)
    _recompile_fresh(final, config, data.num_outputs, ft)
    unsupported = [n for n in left_float if n in scope and n not in options.float_layers and model.get_layer(n).weights]
    info = {
        "scheme": scheme_name,
        "quantized_layers": len(quantized),
        "float_layers": [n for n in left_float if n in scope or not ft["head_only"]],
        "unsupported_layers": unsupported,
        "backbone_float": bool(ft["head_only"]),
        "finetune": ft,
    }
    return StageResult(final, "qat", info, history, time.perf_counter() - start, qat)


def _copy_model(model):
    """A new model with the same graph and weights, sharing no layer objects with ``model``."""
    with keras_load_scope():
        clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# ---------------------------------------------------------------------------------------------
# Measurements


def _kernel_variable(layer):
    """The main weight variable of ``layer`` (kernel, depthwise kernel...), QAT wrappers included.

    A QAT wrapper replaces its inner layer's ``kernel`` attribute with the fake-quantized tensor,
    so the variable is looked up among the weights instead.
    """
    inner = getattr(layer, "layer", layer)
    names = _kernel_names(inner)
    if not names:
        return inner.name, None
    for v in layer.weights:
        if _var_key(v) == names[0]:
            return inner.name, v
    return inner.name, None


def weight_sparsity(model, layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Share of exactly-zero values in the kernels of ``model``.

    Args:
        model: a Keras model (stripped, or QAT: wrappers are looked through).
        layers: names to report (default: every layer with a kernel).

    Returns:
        ``{"layers": {name: {"sparsity", "weights"}}, "overall": zeros/weights over those
        kernels, "weights": their count, "overall_all_weights": zeros/parameters of the whole
        model}``.
    """
    rows, zeros, total = {}, 0, 0
    for layer in model.layers:
        name, variable = _kernel_variable(layer)
        if variable is None or (layers is not None and name not in layers):
            continue
        value = variable.numpy()
        z = int(np.count_nonzero(value == 0))
        rows[name] = {"sparsity": z / max(1, value.size), "weights": int(value.size)}
        zeros += z
        total += int(value.size)
    params = _float_params(model)
    all_zero = sum(int(np.count_nonzero(w.numpy() == 0)) for w in params)
    all_total = sum(int(np.prod(w.shape)) for w in params)
    return {"layers": rows, "overall": zeros / max(1, total), "weights": total, "overall_all_weights": all_zero / max(1, all_total)}


def _float_params(model) -> list:
    """The model's parameters: kernels, biases, BN parameters (no quantizer or pruning state)."""
    keep = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "embeddings")
    seen, out = set(), []
    for v in model.weights:
        if _var_key(v) in keep and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def unique_weights(model, layers: Sequence[str] | None = None, per_channel: bool = False) -> dict[str, int]:
    """Number of distinct values in each layer's kernel (per output channel: the maximum).

    Args:
        model: a Keras model (QAT wrappers are looked through).
        layers: names to report (default: every layer with a kernel).
        per_channel: count per output channel and report the largest count.
    """
    out = {}
    for layer in model.layers:
        name, variable = _kernel_variable(layer)
        if variable is None or (layers is not None and name not in layers):
            continue
        value = variable.numpy()
        if per_channel and value.ndim > 1:
            flat = value.reshape(-1, value.shape[-1])
            out[name] = int(max(len(np.unique(flat[:, c])) for c in range(flat.shape[1])))
        else:
            out[name] = int(len(np.unique(value)))
    return out


def gzipped_size(data: bytes | str | os.PathLike) -> int:
    """Bytes of ``data`` (or of the file at that path) after gzip at level 9."""
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def _keras_bytes(model) -> bytes:
    """The ``.keras`` file of ``model`` as bytes (what model.keras in a run directory holds)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        save_model(model, path)
        return path.read_bytes()


def convert_int8(model, representative: np.ndarray, *, allow_float_ops: bool = True) -> tuple[bytes, bool]:
    """Converts ``model`` to an int8 TFLite flatbuffer (float32 input and output).

    QAT models carry their own ranges; other models are calibrated on ``representative`` (raw
    uint8 pixels, a hundred or so training images). Ops without an int8 kernel make the
    conversion fail unless ``allow_float_ops``, which then keeps them in float.

    Returns:
        (flatbuffer bytes, whether every op is integer).

    Raises:
        TLKerasError: if the converter fails.
    """
    images = np.asarray(representative, dtype=np.float32)

    def samples():
        for i in range(len(images)):
            yield [images[i : i + 1]]

    # A traced concrete function converts in about half the time of from_keras_model, which
    # exports a temporary SavedModel first. The batch dimension stays dynamic.
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)

    def attempt(ops):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = ops
        return converter.convert()

    with _quiet_converter():
        try:
            return attempt([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]), True
        except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others
            if not allow_float_ops:
                raise TLKerasError(f"int8 TFLite conversion failed: {' '.join(str(exc).split())[:200]}") from None
        try:
            return attempt([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]), False
        except Exception as exc:  # noqa: BLE001
            raise TLKerasError(f"int8 TFLite conversion failed: {' '.join(str(exc).split())[:200]}") from None


@contextlib.contextmanager
def _quiet_converter():
    import logging

    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _interpreter(flat: bytes):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=flat, num_threads=max(1, os.cpu_count() or 1))


def _tflite_predict(flat: bytes, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    interpreter = _interpreter(flat)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs, current = [], None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if current != len(batch):
            interpreter.resize_tensor_input(inp["index"], [len(batch), *x.shape[1:]])
            interpreter.allocate_tensors()
            current = len(batch)
        if inp["dtype"] == np.float32:
            feed = batch.astype(np.float32)
        else:  # an integer input: quantize with the tensor's own parameters
            scale, zero = inp["quantization"]
            feed = np.clip(np.round(batch / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        outputs.append(np.asarray(y, dtype=np.float32).copy())
    return np.concatenate(outputs)


def evaluate_tflite(flat: bytes, split, class_names: list[str], head: str) -> dict[str, Any]:
    """Runs a TFLite model with the LiteRT interpreter on ``split`` and returns its metrics."""
    return compute_metrics(split.y, _tflite_predict(flat, split.x), class_names, head)


def tflite_weight_sparsity(flat: bytes) -> dict[str, Any]:
    """Share of zeros in the weight tensors of CONV_2D and FULLY_CONNECTED ops of a TFLite model.

    Returns:
        ``{"layers": {tensor name: {"sparsity", "weights", "dtype"}}, "overall": zeros/weights}``.
    """
    interpreter = _interpreter(flat)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    rows, zeros, total = {}, 0, 0
    for op in interpreter._get_ops_details():  # LiteRT's op table: the only way to tell weights apart
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 2:
            continue
        index = int(op["inputs"][1])
        try:
            value = interpreter.get_tensor(index)
        except ValueError:
            continue
        z = int(np.count_nonzero(value == 0))
        rows[details[index]["name"]] = {"sparsity": z / max(1, value.size), "weights": int(value.size), "dtype": str(value.dtype)}
        zeros += z
        total += int(value.size)
    return {"layers": rows, "overall": zeros / max(1, total), "weights": total}


# ---------------------------------------------------------------------------------------------
# A whole optimized run


def _metric_name(head: str) -> str:
    return {"softmax": "accuracy", "sigmoid": "f1_macro", "regression": "mae"}[head]


def _stage_plan(prune_opts, cluster_opts, qat_opts) -> list[str]:
    plan = [s for s, o in (("prune", prune_opts), ("cluster", cluster_opts), ("qat", qat_opts)) if o is not None]
    if not plan:
        raise TLKerasError("nothing to do: choose at least one of --prune SPARSITY, --cluster N, --qat")
    return plan


def _pipeline_name(plan: list[str]) -> str:
    if plan == ["prune", "qat"]:
        return "PQAT (pruning, then prune-preserving QAT)"
    if plan == ["cluster", "qat"]:
        return "CQAT (clustering, then cluster-preserving QAT)"
    if plan == ["prune", "cluster", "qat"]:
        return "PCQAT (pruning, sparsity-preserving clustering, then sparsity- and cluster-preserving QAT)"
    if plan == ["prune", "cluster"]:
        return "pruning, then sparsity-preserving clustering"
    return {"prune": "pruning", "cluster": "weight clustering", "qat": "quantization-aware training"}["".join(plan)] if len(plan) == 1 else " + ".join(plan)


def _default_name(source: str, plan: list[str], prune_opts: PruningOptions | None, cluster_opts: ClusteringOptions | None) -> str:
    parts = []
    if prune_opts is not None:
        parts.append("prune24" if prune_opts.structure == "2:4" else f"prune{int(round(prune_opts.target_sparsity * 100))}")
    if cluster_opts is not None:
        parts.append(f"cluster{cluster_opts.clusters}")
    if "qat" in plan:
        parts.append("qat")
    return f"{source}-{'-'.join(parts)}"


def _load_source(run_dir: Path):
    if not (run_dir / "config.yaml").is_file() and run_dir.is_dir():
        raise TLKerasError(f"{run_dir} has no config.yaml; pass a run directory written by tlkeras.train")
    model = load_model(run_dir)
    config = load_config(run_dir / "config.yaml")
    labels = read_labels(run_dir)
    return model, config, labels


def _load_source_data(run_dir: Path, model, config: RunConfig, labels: list[str], data: DataBundle | None, data_source: str | None) -> DataBundle:
    size = int(model.inputs[0].shape[1])
    if data is None:
        if data_source is not None:
            config.data.source = data_source
        if config.data.source is None:
            raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data (or data=) with the images to fine-tune on")
        data = load_data(config.data, size, config.model.head, config.seed)
    if list(data.class_names) != labels:
        raise TLKerasError(f"the data's classes {data.class_names} differ from the run's {labels}; optimize on data with the same classes")
    if data.image_size != size:
        raise TLKerasError(f"the data is {data.image_size}px but the model takes {size}px; load it at {size}px")
    return data


def _int8_block(model, data: DataBundle, representative: np.ndarray, split) -> tuple[bytes, dict[str, Any]]:
    flat, integer = convert_int8(model, representative)
    metrics = evaluate_tflite(flat, split, data.class_names, data.head)
    return flat, {"metrics": metrics, "full_integer": integer, "bytes": len(flat), "gzip_bytes": gzipped_size(flat)}


def optimize_run(
    run_dir: str | os.PathLike,
    *,
    pruning: PruningOptions | None = None,
    clustering: ClusteringOptions | None = None,
    qat: QATOptions | None = None,
    finetune: FineTuneOptions | None = None,
    output_dir: str | os.PathLike | None = None,
    name: str | None = None,
    data: DataBundle | None = None,
    data_source: str | None = None,
    tflite: bool = True,
    representative_count: int = 100,
    callbacks: Sequence | None = None,
    write: bool = True,
) -> OptimizeResult:
    """Compresses the model of a trained run into a new run directory, with a report.

    Stages run in the order prune -> cluster -> QAT, each fine-tuning with the run's phase-2
    settings. With QAT after pruning and/or clustering the preserving schemes are used (PQAT,
    CQAT, PCQAT); clustering after pruning preserves sparsity.

    Args:
        run_dir: a run directory written by ``tlkeras.train`` (or by this function).
        pruning: pruning options (None: no pruning).
        clustering: clustering options (None: no clustering).
        qat: QAT options (None: no QAT).
        finetune: fine-tuning overrides (epochs, learning rate, head_only...).
        output_dir: parent of the new run directory (default: the source run's parent).
        name: the new run's name (default: ``<source>-<stages>``, e.g. ``base-prune50-qat``).
        data: a ready DataBundle with the run's classes (default: load the run's data source).
        data_source: another path to the run's data (when it moved).
        tflite: also convert to int8 TFLite, evaluate it with LiteRT and measure sizes (the
            report's int8 columns; ``model_int8.tflite`` is written).
        representative_count: training images used to calibrate post-training int8.
        callbacks: extra Keras callbacks for every fine-tuning stage.
        write: write the run directory (False: only return the result).

    Returns:
        An OptimizeResult with the new run directory, the model and the report.

    Raises:
        TLKerasError: bad options, a bad run directory, a TF-Hub backbone without head_only,
            layers tfmot does not support, an existing target directory. Nothing is left behind
            on error: the directory is assembled aside and renamed at the end.

    Side effects: writes ``<output_dir>/<name>/`` (config.yaml, model.keras, labels.txt,
    history.json, metrics.json, confusion_matrix.png, run.json, optimization.json,
    optimization.md, model_int8.tflite, logs/).
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    prune_opts = pruning.validate() if pruning is not None else None
    cluster_opts = clustering.validate() if clustering is not None else None
    qat_opts = qat.validate() if qat is not None else None
    fto = (finetune or FineTuneOptions()).validate()
    plan = _stage_plan(prune_opts, cluster_opts, qat_opts)
    model, config, labels = _load_source(run_dir)
    ft = fto.resolve(config)
    for stage in plan:  # fail before loading data or training anything
        _check_hub(model, ft["head_only"], {"prune": "prune", "cluster": "cluster", "qat": "quantize"}[stage])
    if prune_opts is not None:
        _prune_targets(model, prune_opts, ft["head_only"])
    if cluster_opts is not None:
        _cluster_targets(model, cluster_opts, ft["head_only"])
    target_name = name or _default_name(run_dir.name, plan, prune_opts, cluster_opts)
    final_dir = Path(output_dir) / target_name if output_dir is not None else run_dir.parent / target_name
    if write and final_dir.exists():
        raise TLKerasError(f"{final_dir} already exists; choose another --name or remove it")
    data = _load_source_data(run_dir, model, config, labels, data, data_source)
    split_name, split = data.eval_split
    metric = _metric_name(data.head)
    rng = np.random.default_rng(config.seed)
    count = min(representative_count, len(data.train))
    representative = data.train.x[np.sort(rng.choice(len(data.train), size=count, replace=False))]

    before: dict[str, Any] = {"metrics": compute_metrics(split.y, predict(model, split.x), data.class_names, data.head)}
    before["keras_bytes"] = (run_dir / "model.keras").stat().st_size
    before["keras_gzip_bytes"] = gzipped_size(run_dir / "model.keras")
    if tflite:
        _, before["int8"] = _int8_block(model, data, representative, split)
    before["sparsity"] = weight_sparsity(model)["overall"]

    stage_ctx = staged_directory(final_dir) if write else contextlib.nullcontext(None)
    with stage_ctx as out_dir:
        log_dir = Path(out_dir) / "logs" if out_dir is not None else None
        stages: list[StageResult] = []
        current = model
        pre_qat = model
        for stage in plan:
            if stage == "prune":
                result = prune(current, data, config, prune_opts, fto, callbacks=callbacks, log_dir=log_dir)
            elif stage == "cluster":
                result = cluster(current, data, config, cluster_opts, fto, preserve_sparsity=prune_opts is not None,
                                              callbacks=callbacks, log_dir=log_dir)
            else:
                preserve = "+".join(p for p, o in (("sparsity", prune_opts), ("clusters", cluster_opts)) if o is not None) or "none"
                pre_qat = current
                result = quantize_aware(current, data, config, qat_opts, fto, preserve=preserve, callbacks=callbacks, log_dir=log_dir)
            stages.append(result)
            current = result.model
        optimized = current

        after: dict[str, Any] = {"metrics": compute_metrics(split.y, predict(optimized, split.x), data.class_names, data.head)}
        if out_dir is not None:
            save_model(optimized, Path(out_dir) / "model.keras")
            keras_file = (Path(out_dir) / "model.keras").read_bytes()
        else:
            keras_file = _keras_bytes(optimized)
        after["keras_bytes"] = len(keras_file)
        after["keras_gzip_bytes"] = gzipped_size(keras_file)
        flat = None
        report_tflite: dict[str, Any] = {}
        if tflite:
            flat, after["int8"] = _int8_block(optimized, data, representative, split)
            after["int8"]["method"] = "qat" if "qat" in plan else "post-training"
            report_tflite = tflite_weight_sparsity(flat)
            if "qat" in plan:
                if pre_qat is model:
                    after["int8_ptq_same_model"] = before["int8"]
                else:
                    _, after["int8_ptq_same_model"] = _int8_block(pre_qat, data, representative, split)

        report = _report(run_dir, final_dir if write else None, plan, stages, before, after, report_tflite, metric, split_name, optimized,
                         prune_opts, cluster_opts, ft, time.perf_counter() - t0)
        if out_dir is not None:
            out = Path(out_dir)
            new_config = load_config(run_dir / "config.yaml")
            new_config.output_dir = str(final_dir.parent)
            new_config.name = target_name
            save_config(new_config, out / "config.yaml")
            atomic_write_text(out / "labels.txt", "\n".join(data.class_names) + "\n")
            history = _merge_histories(stages)
            write_json(out / "history.json", history)
            metrics = {
                "val": compute_metrics(data.val.y, predict(optimized, data.val.x), data.class_names, data.head),
                "final_split": split_name,
                "final": after["metrics"],
                "timings": {s.stage: s.seconds for s in stages} | {"total": time.perf_counter() - t0},
            }
            write_reports(out, metrics, data.class_names, data.head, history if history.get("loss") else None)
            write_json(out / "run.json", _run_info(run_dir, data, report))
            if flat is not None:
                with atomic_path(out / INT8_TFLITE) as tmp:
                    Path(tmp).write_bytes(flat)
            write_json(out / REPORT_JSON, report)
            atomic_write_text(out / REPORT_MD, report_markdown(report))
    return OptimizeResult(final_dir if write else None, optimized, report, stages, flat)


def _merge_histories(stages: list[StageResult]) -> dict[str, list]:
    merged: dict[str, list] = {"stage": []}
    for result in stages:
        epochs = len(next(iter(result.history.values()))) if result.history else 0
        for key, series in result.history.items():
            merged.setdefault(key, [None] * len(merged["stage"]))
            merged[key].extend(series)
        merged["stage"].extend([result.stage] * epochs)
        for series in merged.values():
            series.extend([None] * (len(merged["stage"]) - len(series)))
    return merged


def _run_info(source: Path, data: DataBundle, report: dict) -> dict[str, Any]:
    from tlkeras.core.versions import versions  # the same version table as training runs

    return {
        "versions": versions(),
        "data": {"source": data.source, "train": len(data.train), "val": len(data.val), "test": len(data.test) if data.test is not None else 0},
        "optimization": {"source_run": str(source), "stages": report["stages"], "qat": "qat" in [s["stage"] for s in report["stages"]],
                         "report": REPORT_JSON},
        "timings": {"total": report["seconds"]},
    }


def _report(source, run_dir, plan, stages, before, after, tfl, metric, split_name, model, prune_opts, cluster_opts, ft, seconds) -> dict[str, Any]:
    report: dict[str, Any] = {
        "source_run": str(source),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "pipeline": _pipeline_name(plan),
        "stages": [{"stage": s.stage, "seconds": round(s.seconds, 2), "epochs": s.info["finetune"]["epochs"], "epochs_run": len(s.history.get("loss", [])),
                    **{k: v for k, v in s.info.items() if k != "finetune"}} for s in stages],
        "finetune": ft,
        "metric": metric,
        "split": split_name,
        "accuracy": {
            "before": {"float": before["metrics"].get(metric), "int8_ptq": before.get("int8", {}).get("metrics", {}).get(metric)},
            "after": {"float": after["metrics"].get(metric), "int8": after.get("int8", {}).get("metrics", {}).get(metric),
                      "int8_method": after.get("int8", {}).get("method")},
        },
        "size": {
            "before": {"keras_bytes": before["keras_bytes"], "keras_gzip_bytes": before["keras_gzip_bytes"],
                       "int8_tflite_bytes": before.get("int8", {}).get("bytes"), "int8_tflite_gzip_bytes": before.get("int8", {}).get("gzip_bytes")},
            "after": {"keras_bytes": after["keras_bytes"], "keras_gzip_bytes": after["keras_gzip_bytes"],
                      "int8_tflite_bytes": after.get("int8", {}).get("bytes"), "int8_tflite_gzip_bytes": after.get("int8", {}).get("gzip_bytes")},
        },
        "seconds": round(seconds, 1),
    }
    if "int8_ptq_same_model" in after:
        report["accuracy"]["after"]["int8_ptq_same_model"] = after["int8_ptq_same_model"]["metrics"].get(metric)
    b, a = report["size"]["before"], report["size"]["after"]
    report["size"]["keras_gzip_ratio"] = b["keras_gzip_bytes"] / a["keras_gzip_bytes"]
    if a["int8_tflite_gzip_bytes"]:
        report["size"]["int8_gzip_ratio"] = b["int8_tflite_gzip_bytes"] / a["int8_tflite_gzip_bytes"]
        report["full_integer"] = after["int8"]["full_integer"]
    pruned = next((s for s in stages if s.stage == "prune"), None)
    if pruned is not None:
        sp = weight_sparsity(model, pruned.info["pruned_layers"])
        allsp = weight_sparsity(model)
        report["sparsity"] = {
            "target": prune_opts.target_sparsity,
            "structure": prune_opts.structure,
            "pruned_layers_overall": sp["overall"],
            "all_kernels_overall": allsp["overall"],
            "all_parameters_overall": allsp["overall_all_weights"],
            "before_all_kernels": before["sparsity"],
            "layers": {n: {**row, "pruned": n in pruned.info["pruned_layers"]} for n, row in allsp["layers"].items()},
        }
        if tfl:
            report["sparsity"]["int8_tflite_overall"] = tfl["overall"]
            report["sparsity"]["int8_tflite_layers"] = tfl["layers"]
    clustered = next((s for s in stages if s.stage == "cluster"), None)
    if clustered is not None:
        names = clustered.info["clustered_layers"]
        whole = unique_weights(model, names)
        channel = unique_weights(model, names, per_channel=True)
        # CQAT keeps N values per output channel of Conv2D kernels (tfmot matches its per-channel
        # int8 quantization), so after QAT the per-channel count is the one bounded by N.
        per_channel = clustered.info["per_channel"] or "qat" in plan
        bounded = channel if per_channel else whole
        report["clustering"] = {
            "clusters": cluster_opts.clusters, "init": cluster_opts.init, "per_channel": clustered.info["per_channel"],
            "bound": "per output channel" if per_channel else "per kernel",
            "unique_weights": {n: {"kernel": whole[n], "max_per_channel": channel[n]} for n in names},
            "max_unique": max(bounded.values()) if bounded else None,
        }
    q = next((s for s in stages if s.stage == "qat"), None)
    if q is not None:
        report["qat"] = {k: v for k, v in q.info.items() if k != "finetune"}
    return report


def _fmt(value, kind: str = "acc") -> str:
    if value is None:
        return "—"
    if kind == "acc":
        return f"{value:.3f}"
    if kind == "bytes":
        return f"{value / 1024:.1f} KiB"
    return f"{value:.1%}"


def report_markdown(report: dict[str, Any]) -> str:
    """The human-readable form of an optimization report (``optimization.md``)."""
    acc, size = report["accuracy"], report["size"]
    m = report["metric"]
    lines = [
        f"# Optimization report: {report['pipeline']}",
        "",
        f"Source run: `{report['source_run']}`  ",
        "Fine-tuning: " + ", ".join(f"{s['stage']} {s['epochs_run']}/{s['epochs']} epochs" for s in report["stages"])
        + f" at learning rate {report['finetune']['learning_rate']:g} "
        f"({report['finetune']['schedule']}), batch {report['finetune']['batch_size']}, augment {report['finetune']['augment']}"
        + (", head only" if report["finetune"]["head_only"] else "") + f"; total {report['seconds']} s.",
        "",
        f"## {m} on the {report['split']} split",
        "",
        "| model | float | int8 TFLite |",
        "|---|---|---|",
        f"| before (source run, post-training int8) | {_fmt(acc['before']['float'])} | {_fmt(acc['before']['int8_ptq'])} |",
        f"| after ({acc['after'].get('int8_method') or 'no'} int8) | {_fmt(acc['after']['float'])} | {_fmt(acc['after']['int8'])} |",
    ]
    if "int8_ptq_same_model" in acc["after"]:
        lines.append(f"| post-training int8 of the model QAT started from | — | {_fmt(acc['after']['int8_ptq_same_model'])} |")
    lines += [
        "",
        "## Size (gzip -9)",
        "",
        "| model | Keras model.keras | gzipped | int8 TFLite | gzipped |",
        "|---|---|---|---|---|",
    ]
    for key in ("before", "after"):
        s = size[key]
        lines.append(f"| {key} | {_fmt(s['keras_bytes'], 'bytes')} | {_fmt(s['keras_gzip_bytes'], 'bytes')} | "
                     f"{_fmt(s['int8_tflite_bytes'], 'bytes')} | {_fmt(s['int8_tflite_gzip_bytes'], 'bytes')} |")
    ratio = f"gzipped Keras model {size['keras_gzip_ratio']:.2f}x smaller"
    if "int8_gzip_ratio" in size:
        ratio += f", gzipped int8 TFLite {size['int8_gzip_ratio']:.2f}x smaller than the source's post-training int8"
    lines += ["", ratio + "."]
    if "sparsity" in report:
        sp = report["sparsity"]
        lines += ["", "## Sparsity", "",
                  f"Target {sp['target']:.0%} ({sp['structure']}); pruned layers {_fmt(sp['pruned_layers_overall'], 'pct')}, "
                  f"all kernels {_fmt(sp['all_kernels_overall'], 'pct')}, all parameters {_fmt(sp['all_parameters_overall'], 'pct')}"
                  + (f"; in the int8 TFLite (conv/dense weights) {_fmt(sp['int8_tflite_overall'], 'pct')}" if "int8_tflite_overall" in sp else "")
                  + ".", "", "| layer | weights | sparsity | pruned |", "|---|---|---|---|"]
        for name, row in sp["layers"].items():
            lines.append(f"| {name} | {row['weights']} | {_fmt(row['sparsity'], 'pct')} | {'yes' if row['pruned'] else 'no'} |")
    if "clustering" in report:
        cl = report["clustering"]
        lines += ["", "## Clustering", "",
                  f"{cl['clusters']} clusters, {cl['init']} initialization" + (", per channel" if cl["per_channel"] else "")
                  + f"; at most {cl['max_unique']} unique weights {cl['bound']} in the clustered layers.", "",
                  "| layer | unique weights in the kernel | max unique per output channel |", "|---|---|---|"]
        for name, row in cl["unique_weights"].items():
            lines.append(f"| {name} | {row['kernel']} | {row['max_per_channel']} |")
    if "qat" in report:
        q = report["qat"]
        lines += ["", "## Quantization-aware training", "", f"Scheme: {q['scheme']}; {q['quantized_layers']} layers quantized."]
        floats = q["unsupported_layers"]
        lines.append("Layers left in float (unsupported by QAT): " + (", ".join(floats) if floats else "none") + ".")
        if q["backbone_float"]:
            lines.append("Head only: the backbone was not quantization-aware trained (it is calibrated post-training in the int8 model).")
    if report.get("full_integer") is False:
        lines += ["", "Note: some ops have no int8 kernel and stay float in the TFLite model."]
    return "\n".join(lines) + "\n"
