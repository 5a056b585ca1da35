"""Models: a backbone with preprocessing inside and a new head, as one flat functional graph.

The graph is ``raw pixels -> preprocess_* -> backbone layers -> head_*``. The backbone's layers
sit directly in the model (not as a nested Model), so tfmot can prune and quantize the whole
graph later. Layer names tell the parts apart after saving and loading: ``preprocess_*`` and
``head_*`` are ours, everything else between them is the backbone.
"""

from __future__ import annotations

from pathlib import Path

from tlkeras._backend import keras
from tlkeras.config import ModelConfig, parse_unfreeze
from tlkeras.core.backbones import BackboneSpec, block_ids, build_hub_backbone, get_backbone, load_backbone_weights, preprocessing_layers
from tlkeras.core.tasks import task_of
from tlkeras.errors import TLKerasError

__all__ = [
    "build_model",
    "build_text_classifier",
    "check_model_config",
    "resolve_image_size",
    "backbone_layers",
    "feature_layer_name",
    "feature_extractor",
    "head_model",
    "freeze_backbone",
    "unfreeze_backbone",
    "trainable_backbone_layers",
    "head_dropout",
]

HUB_PREFIX = "hub:"


def _spec_for(config: ModelConfig) -> BackboneSpec | None:
    if config.backbone.startswith(HUB_PREFIX):
        return None
    return get_backbone(config.backbone)


def resolve_image_size(config: ModelConfig, image_size: int | None) -> int:
    """Returns the input size to use: ``image_size`` or the backbone's default.

    Raises:
        TLKerasError: if the size is below what the backbone can take.
    """
    spec = _spec_for(config)
    if spec is None:
        return int(image_size or 224)
    size = int(image_size or spec.default_size)
    if size < spec.min_size:
        raise TLKerasError(
            f"{spec.name} needs an input of at least {spec.min_size}x{spec.min_size} pixels, "
            f"got {size}; pass --image-size {spec.min_size} or larger"
        )
    return size


def check_model_config(config: ModelConfig, image_size: int | None = None) -> int:
    """Cheap checks before any data is read: backbone name, input size, weights path.

    Returns the resolved input size. Raises TLKerasError on the first problem, so a bad flag fails
    in a second instead of after loading thousands of images.
    """
    config.validate()
    size = resolve_image_size(config, image_size)
    weights = str(config.weights).strip()
    if weights.lower() not in ("imagenet", "none") and not config.backbone.startswith(HUB_PREFIX):
        if not Path(weights).expanduser().is_file():
            spec = _spec_for(config)
            raise TLKerasError(
                f"weights file {weights} does not exist; pass imagenet, none or a path to a "
                f"weights file for {spec.name if spec else config.backbone}"
            )
    return size


def head_dropout(config: ModelConfig) -> float:
    """``config.dropout``, or the backbone family's recipe default when it is unset (None)."""
    if config.dropout is not None:
        return float(config.dropout)
    from tlkeras.core.backbones import get_backbone, recipe_for

    text = not config.backbone.startswith(HUB_PREFIX) and get_backbone(config.backbone).modality == "text"
    return float(recipe_for(config.backbone, "text" if text else "image").dropout)


def _output_layers(config: ModelConfig, num_outputs: int):
    """Returns the head's layers after the feature vector, in order."""
    layers = []
    dropout = head_dropout(config)
    for i, units in enumerate(config.hidden_units):
        layers.append(keras.layers.Dense(int(units), activation="relu", name=f"head_hidden_{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name=f"head_hidden_dropout_{i}"))
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout, name="head_dropout"))
    layers.append(keras.layers.Dense(num_outputs, name="head_dense"))
    activation = task_of(config).activation()
    # float32 output keeps the loss numerically sane under mixed precision.
    layers.append(keras.layers.Activation(activation, dtype="float32", name="head_output"))
    return layers


def build_model(config: ModelConfig, num_outputs: int, image_size: int | None = None) -> keras.Model:
    """Builds backbone + preprocessing + new head as one flat functional model.

    The backbone starts frozen (phase 1). Raw RGB pixels in [0, 255] go in; probabilities
    (softmax/sigmoid) or values (regression) come out.

    Args:
        config: backbone, weights and head settings.
        num_outputs: number of classes (or regression targets).
        image_size: square input size; None uses the backbone's default.

    Returns:
        An uncompiled ``keras.Model`` named ``tlkeras_<backbone>``.

    Raises:
        TLKerasError: unknown backbone, too small an input, weights offline or for another
            architecture, an unusable TF-Hub model.
    """
    config.validate()
    if num_outputs < 1:
        raise TLKerasError("the head needs at least one output")
    spec = _spec_for(config)
    size = resolve_image_size(config, image_size)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    if spec is None:
        x = preprocessing_layers("unit")[0](inputs)
        features = build_hub_backbone(config.backbone[len(HUB_PREFIX):], x)
        name = "tlkeras_hub"
    else:
        if spec.has_alpha and config.alpha is not None and config.alpha <= 0:
            raise TLKerasError(f"alpha must be > 0, got {config.alpha}")
        x = inputs
        for layer in preprocessing_layers(spec.preprocessing):
            x = layer(x)
        weights = str(config.weights).strip()
        try:
            base = spec.build(x, alpha=config.alpha, weights=None, size=size)
        except ValueError as exc:
            raise TLKerasError(f"cannot build {spec.name} at {size}px: {exc}") from None
        body = [l for l in base.layers if not _is_ours(l)]
        if weights.lower() != "none":
            load_backbone_weights(
                spec, body, alpha=config.alpha, weights="imagenet" if weights.lower() == "imagenet" else weights, size=size
            )
        features = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
        name = f"tlkeras_{spec.name}"
    y = features
    for layer in _output_layers(config, num_outputs):
        y = layer(y)
    model = keras.Model(inputs, y, name=name)
    freeze_backbone(model)
    return model


def build_text_classifier(config: ModelConfig, num_outputs: int, train_texts, sequence_length: int | None, *, seed: int = 42) -> keras.Model:
    """Builds a text encoder (tokenizer inside) and the same new head as :func:`build_model`.

    See :func:`tlkeras.core.text.encoders.build_text_model`: raw strings in, the encoder frozen.
    """
    from tlkeras.core.text.encoders import build_text_model

    config.validate()
    if num_outputs < 1:
        raise TLKerasError("the head needs at least one output")
    return build_text_model(config, num_outputs, train_texts, sequence_length, seed=seed, head_layers=_output_layers)


# ---------------------------------------------------------------------------------------------
# Parts of a (possibly reloaded) model


def _is_ours(layer) -> bool:
    return layer.name.startswith(("preprocess_", "head_")) or isinstance(layer, keras.layers.InputLayer)


def backbone_layers(model: keras.Model) -> list:
    """Returns the backbone's layers in topological order (neither input, preprocessing nor head)."""
    return [l for l in model.layers if not _is_ours(l)]


def feature_layer_name(model: keras.Model) -> str:
    """Name of the layer whose output is the pooled feature vector the head starts from."""
    names = [l.name for l in model.layers]
    if "head_pool" in names:
        return "head_pool"
    if "backbone_hub" in names:
        return "backbone_hub"
    raise TLKerasError(f"model {model.name} was not built by tlkeras (no head_pool layer)")


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model from raw pixels to the pooled features (shares layers with ``model``)."""
    return keras.Model(model.inputs, model.get_layer(feature_layer_name(model)).output)


def head_model(model: keras.Model) -> keras.Model:
    """A model from pooled features to the output, sharing ``model``'s head layers.

    Training it trains the full model's head: the weights are the same variables.
    """
    start = feature_layer_name(model)
    layers = model.layers
    index = [l.name for l in layers].index(start)
    features = model.get_layer(start).output
    inputs = keras.Input(shape=tuple(features.shape[1:]), name="features")
    x = inputs
    for layer in layers[index + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: freezes every backbone and preprocessing layer; the head stays trainable.

    Side effect: changes ``trainable`` flags; recompile before training.
    """
    for layer in model.layers:
        layer.trainable = layer.name.startswith("head_")


def _spec_of_model(model: keras.Model, backbone: str) -> BackboneSpec | None:
    return None if backbone.startswith(HUB_PREFIX) else get_backbone(backbone)


def unfreeze_backbone(model: keras.Model, backbone: str, unfreeze: str, keep_batchnorm_frozen: bool = True) -> list[str]:
    """Phase 2: unfreezes the top of the backbone, keeping BatchNorm layers frozen.

    Args:
        model: a model made by :func:`build_model` (fresh or reloaded).
        backbone: the backbone name it was built with (selects the block layout).
        unfreeze: ``layers:N`` (top N backbone layers), ``blocks:N`` (top N whole blocks),
            ``all`` or ``none``.
        keep_batchnorm_frozen: keep BatchNorm in inference mode (right for pretrained weights).
            A network trained from random init (``weights=none``) needs its BatchNorm to train:
            with frozen initial statistics its activations vanish and nothing learns.

    Returns:
        The names of the backbone layers that are now trainable.

    Side effect: changes ``trainable`` flags; recompile before training.
    """
    kind, count = parse_unfreeze(unfreeze)
    freeze_backbone(model)
    layers = backbone_layers(model)
    if kind == "none":
        return []
    if kind == "all":
        chosen = layers
    elif kind == "layers":
        chosen = layers[-count:]
    else:
        spec = _spec_of_model(model, backbone)
        if spec is None:  # a TF-Hub model is one opaque layer: one block
            chosen = layers
        else:
            ids = block_ids(spec, [l.name for l in layers])
            order = list(dict.fromkeys(ids))
            keep = set(order[-count:])
            chosen = [l for l, b in zip(layers, ids) if b in keep]
    opened = []
    for layer in chosen:
        if keep_batchnorm_frozen and isinstance(layer, keras.layers.BatchNormalization):
            continue  # stays in inference mode: trainable=False BN uses its moving statistics
        layer.trainable = True
        if layer.weights:
            opened.append(layer.name)
    return opened


def trainable_backbone_layers(model: keras.Model) -> list[str]:
    """Names of backbone layers with trainable weights (for checks and reports)."""
    return [l.name for l in backbone_layers(model) if l.trainable and l.trainable_weights]
