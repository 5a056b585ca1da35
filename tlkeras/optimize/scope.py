"""Which layers a compression stage touches: scope (head only or all), tfmot support tables."""

from __future__ import annotations

from typing import Any

from tlkeras._backend import keras
from tlkeras._backend import tfmot as _tfmot

# ---------------------------------------------------------------------------------------------
# Layers: which ones a stage touches
from tlkeras.core.loading import tfmot_internal
from tlkeras.errors import TLKerasError


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


def _unsupported_message(model, names: list[str], verb: str, head_only: bool) -> str:
    kinds = sorted({type(model.get_layer(n)).__name__ for n in names})
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    hint = "pass them to --skip-layers" + ("" if head_only else " or compress the head only with --head-only")
    return f"tfmot cannot {verb} layer(s) {shown} ({', '.join(kinds)}); {hint}"


def compressible_layers(model, weight_names, skip_layers, verb: str, head_only: bool) -> list[tuple[Any, list[str]]]:
    """The layers a stage may ``verb`` (prune, cluster), each with the names of its weights tfmot handles.

    Layers out of scope, without weights, or with nothing tfmot ``verb``s (BatchNorm,
    DepthwiseConv2D for pruning) are left out.

    Raises:
        TLKerasError: a layer in scope that tfmot cannot ``verb`` and ``skip_layers`` does not name.
    """
    found, unsupported = [], []
    for layer in model.layers:
        if not _in_scope(layer, head_only) or not layer.weights:
            continue
        names = weight_names(layer)
        if names is None:
            if layer.name not in skip_layers:
                unsupported.append(layer.name)
        elif names:
            found.append((layer, names))
    if unsupported:
        raise TLKerasError(_unsupported_message(model, unsupported, verb, head_only))
    return found
