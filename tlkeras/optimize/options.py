"""Options and results of the compression stages (pruning, clustering, QAT, fine-tuning).

Plain dataclasses with ``validate()``; the CLI derives its flags from them. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkeras.config import RunConfig
from tlkeras.errors import TLKerasError

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

    def resolve(self, config: RunConfig, train_count: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
        """The effective settings for ``config``'s run (phase-2 values where not overridden).

        Recipe fields the run left unset (None) take the backbone family's defaults, as training
        filled them (:func:`tlkeras.core.backbones.apply_recipe_defaults`, with the data counts
        when given); ``config`` itself is not changed.
        """
        import copy

        from tlkeras.core.backbones import apply_recipe_defaults
        from tlkeras.train.optim import phase2_learning_rate

        config = copy.deepcopy(config)
        apply_recipe_defaults(config, train_count=train_count, num_classes=num_classes)
        tc = config.train
        epochs = self.epochs if self.epochs is not None else (tc.phase2_epochs or 2)
        return {
            "epochs": int(epochs),
            "learning_rate": float(self.learning_rate if self.learning_rate is not None else phase2_learning_rate(config)),
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
