"""Weight clustering with tfmot (optionally per channel, sparsity-preserving), fine-tuned, then stripped."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tlkeras._backend import keras
from tlkeras._backend import tfmot as _tfmot
from tlkeras.config import RunConfig
from tlkeras.core.data import DataBundle
from tlkeras.core.loading import tfmot_internal
from tlkeras.errors import TLKerasError

# ---------------------------------------------------------------------------------------------
# Clustering
from tlkeras.optimize.finetune import _fine_tune, _recompile_fresh, _self_targets, _stage_settings
from tlkeras.optimize.options import CENTROID_INITS, ClusteringOptions, FineTuneOptions, StageResult
from tlkeras.optimize.scope import _check_hub, _clusterable_weight_names, _set_trainable, compressible_layers


def _cluster_targets(model, options: ClusteringOptions, head_only: bool) -> tuple[list[str], dict[str, str]]:
    targets, skipped = [], {}
    for layer, names in compressible_layers(model, _clusterable_weight_names, options.skip_layers, "cluster", head_only):
        kernel = getattr(layer, names[0], None)
        per = int(np.prod(kernel.shape[:-1])) if (options.per_channel and kernel is not None and isinstance(layer, keras.layers.Conv2D)) else (
            int(np.prod(kernel.shape)) if kernel is not None else 0)
        if layer.name in options.skip_layers:
            skipped[layer.name] = "skip_layers"
        elif per <= options.clusters:
            skipped[layer.name] = f"{per} weights, not more than {options.clusters} clusters"
        else:
            targets.append(layer.name)
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
    ft = _stage_settings(fto, config, options.epochs, data)
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
