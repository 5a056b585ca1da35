"""Quantization-aware training with tfmot (plain, PQAT, CQAT, PCQAT) and saving QAT models.

Saving QAT models: tfmot 0.8.1 models do not survive a ``.keras`` round trip as built by
``quantize_apply`` (``QuantizeLayer`` is built twice on load, and wrappers list their variables in
another order than a reloaded model; tensorflow/model-optimization PR #1123, unmerged). tlkeras
therefore rebuilds the trained QAT model the way the loader will, copies the variables by name,
and saves that; load it inside :func:`keras_load_scope` (or with :func:`load_model`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras._backend import keras
from tlkeras._backend import tfmot as _tfmot
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle
from tlkeras.core.loading import keras_load_scope, tfmot_internal
from tlkeras.errors import TLKerasError

# ---------------------------------------------------------------------------------------------
# Quantization-aware training
from tlkeras.optimize.finetune import _fine_tune, _recompile_fresh, _self_targets, _stage_settings
from tlkeras.optimize.options import FineTuneOptions, QATOptions, StageResult
from tlkeras.optimize.scope import _check_hub, _in_scope, _set_trainable
from tlkeras.runs import atomic_path


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
    ft = _stage_settings(fto, config, options.epochs, data)
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
