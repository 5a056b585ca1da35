"""How to export and verify a bundle: :class:`ExportOptions` (the export CLI's flags, the Python API's options)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlkeras.errors import TLKerasError
from tlkeras.export.variants import DEFAULT_VARIANTS, VARIANTS, parse_variants

__all__ = ["ExportOptions"]


@dataclass
class ExportOptions:
    """How to export and verify a bundle.

    Attributes:
        variants: variant names (see :data:`VARIANTS`).
        representative_size: images drawn from the training split, stratified by class, to
            calibrate int8/int16x8 activations.
        max_drop: the largest allowed drop of the primary metric from the Keras model, in points
            (accuracy for softmax heads, subset accuracy for sigmoid, relative MAE increase in
            percent for regression).
        allow_drop: write the bundle and return even when a variant drops more than
            ``max_drop`` (the CLI's ``--allow-drop``).
        debug_quantization: write the per-layer quantization error report for every int8
            variant, not only for those over ``max_drop``.
        debug_images: evaluation images the quantization debugger runs.
        top_layers: layers named in the report summary and in the error message.
        saved_model: also write a SavedModel (dynamic batch) into ``saved_model/``.
        micro: write the C array (``micro/``) when the ``int8`` variant is exported.
        c_name: C identifier prefix of the micro files and symbols.
        overwrite: replace an existing bundle directory.
        seed: seeds the representative-set draw.
        bias_correction: convert the quantized variants from a bias-corrected copy of the
            model (:func:`bias_correct`), which cancels the mean error of int8 rounding.
        metadata: TFLite metadata (MediaPipe's writers) in every variant: ``on`` requires the
            ``mediapipe`` package (bad input without it), ``auto`` writes it when installed,
            ``off`` never.
        verify_mediapipe: load every variant with metadata in MediaPipe Tasks' ImageClassifier
            and compare its top-1 with LiteRT's (softmax and sigmoid heads).
        int8_guardrail: when ``int8_float_io`` misses the gate (drop over ``max_drop`` or top-1
            agreement under ``min_agreement``), keep its worst layers in float until it passes
            (:mod:`tlkeras.export.guardrail`).
        min_agreement: the guardrail's top-1 agreement gate.
        guardrail_budget: the guarded file may be at most this share of the float32 model's bytes.
        onnx: also write ``model.onnx`` (tf2onnx), verified with onnxruntime.
        trainable: also write ``trainable.tflite``, a model that keeps learning on the device
            (infer / embed / train / get_weights / set_weights signatures, builtin ops only;
            softmax image heads; :mod:`tlkeras.export.trainable`).
        trainable_classes: the trainable head's class slots (None: the run's classes and 5 free
            slots for an app's own classes).
        web: also write ``web/``, a page that classifies a dropped, picked or camera image with
            MediaPipe Tasks for Web (needs the npm package ``@mediapipe/tasks-vision`` and the
            metadata; :mod:`tlkeras.export.web`).
        verify_web: with ``web``, classify the evaluation images through the page in headless
            Chromium and compare with LiteRT (skipped, and said, without a browser).
    """

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    representative_size: int = 200
    max_drop: float = 2.0
    allow_drop: bool = False
    debug_quantization: bool = False
    debug_images: int = 32
    top_layers: int = 5
    saved_model: bool = False
    micro: bool = True
    c_name: str = "tlkeras_model"
    overwrite: bool = False
    seed: int = 42
    bias_correction: bool = True
    metadata: str = "auto"
    verify_mediapipe: bool = True
    int8_guardrail: bool = True
    min_agreement: float = 0.97
    guardrail_budget: float = 0.5
    onnx: bool = False
    trainable: bool = False
    trainable_classes: int | None = None
    web: bool = False
    verify_web: bool = True

    def validate(self) -> "ExportOptions":
        self.variants = parse_variants(self.variants)
        if self.representative_size < 1 and any(VARIANTS[v].needs_data for v in self.variants):
            raise TLKerasError(f"representative_size must be >= 1 for {', '.join(v for v in self.variants if VARIANTS[v].needs_data)}, got {self.representative_size}")
        if self.max_drop < 0:
            raise TLKerasError(f"max_drop must be >= 0 points, got {self.max_drop}")
        if self.metadata not in ("auto", "on", "off"):
            raise TLKerasError(f"metadata must be auto, on or off, got {self.metadata!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise TLKerasError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if not 0.0 < self.guardrail_budget <= 1.0:
            raise TLKerasError(f"guardrail_budget must be in (0, 1] (a share of the float32 size), got {self.guardrail_budget}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.c_name or ""):
            raise TLKerasError(f"c_name {self.c_name!r} is not a C identifier; use letters, digits and _")
        if self.trainable_classes is not None and not 2 <= self.trainable_classes <= 4096:
            raise TLKerasError(f"trainable_classes must be in [2, 4096], got {self.trainable_classes}")
        if self.debug_images < 1 or self.top_layers < 1:
            raise TLKerasError("debug_images and top_layers must be >= 1")
        return self
