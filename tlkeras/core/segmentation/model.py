"""The segmentation model: an ImageNet encoder from the backbone registry and a light U-Net decoder.

``raw RGB 0..255 -> preprocess_scale -> MobileNetV2 (flat, its layers in the model) -> decoder_* ->
head_logits (1/2 resolution) -> head_resize (bilinear, to the input size) -> head_output (softmax)``.

The decoder takes the encoder's features at 1/32, 1/16, 1/8, 1/4 and 1/2 and goes back up with
bilinear upsampling, 1x1 projections of each skip and depthwise-separable 3x3 convolutions, so
every op is a TFLite builtin that MediaPipe's ImageSegmenter runs (one input [1,H,W,3], one output
[1,H,W,C] with class 0 as an explicit background).
"""

from __future__ import annotations

from tlkeras._backend import keras
from tlkeras.core.backbones import get_backbone, load_backbone_weights, preprocessing_layers
from tlkeras.errors import TLKerasError

__all__ = ["build_segmenter", "check_segmenter", "SKIPS", "freeze_encoder", "unfreeze_encoder", "encoder_layers", "DEFAULT_SIZE"]

DEFAULT_SIZE = 256
# Feature layers of each supported encoder, finest first: 1/2, 1/4, 1/8, 1/16, 1/32.
SKIPS = {
    "mobilenet_v2": ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"),
}
# Decoder BatchNorm: momentum 0.9 (Keras: 0.99) so its moving statistics catch up within the few
# hundred steps a small set gives; with 0.99 inference-mode masks lag the trained model by epochs.
# Decoder widths, coarse to fine (1/16, 1/8, 1/4, 1/2) and each skip's projection width; the
# decoder stops at the resolution of the last width (FINEST: 2 = 1/2, 4 = 1/4).
_WIDTHS = (128, 96, 64, 32)
_SKIP_WIDTHS = (64, 48, 32, 16)
FINEST = 4


def _is_ours(layer) -> bool:
    return layer.name.startswith(("preprocess_", "decoder_", "head_")) or isinstance(layer, keras.layers.InputLayer)


def encoder_layers(model) -> list:
    """The encoder's layers (neither input, preprocessing, decoder nor head)."""
    return [layer for layer in model.layers if not _is_ours(layer)]


def _conv_bn(x, filters: int, name: str, separable: bool = False):
    if separable:
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def check_segmenter(model_config, size: int) -> str:
    """Cheap checks before any data is read; returns the registry name of the backbone.

    Raises:
        TLKerasError: another backbone, a size not divisible by 32 or under 64.
    """
    name = model_config.backbone if str(model_config.backbone).startswith("hub:") else get_backbone(model_config.backbone).name
    if name not in SKIPS:
        raise TLKerasError(f"segmentation supports the backbones {', '.join(SKIPS)}, got {model_config.backbone}; pass --backbone mobilenet_v2")
    if size % 32 or size < 64:
        raise TLKerasError(f"segmentation needs an input size that is a multiple of 32 and at least 64, got {size}; e.g. --image-size 256")
    return name


def build_segmenter(model_config, num_classes: int, size: int = DEFAULT_SIZE):
    """Builds the encoder-decoder, encoder frozen (phase 1).

    Args:
        model_config: backbone (``mobilenet_v2``), alpha and weights (``imagenet``, ``none`` or a
            weights file for that backbone, e.g. the shipped MobileNetV2 ImageNet file).
        num_classes: output channels, class 0 the background (at least 2).
        size: square input size, a multiple of 32.

    Raises:
        TLKerasError: another backbone, a size not divisible by 32, weights that do not fit.
    """
    name = check_segmenter(model_config, size)
    if num_classes < 2:
        raise TLKerasError("segmentation needs at least two classes (an explicit background and one more)")
    spec = get_backbone(name)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    try:
        base = spec.build(x, alpha=model_config.alpha, weights=None, size=size)
    except ValueError as exc:
        raise TLKerasError(f"cannot build {spec.name} at {size}px: {exc}") from None
    body = [layer for layer in base.layers if not _is_ours(layer)]
    weights = str(model_config.weights).strip()
    if weights.lower() != "none":
        load_backbone_weights(spec, body, alpha=model_config.alpha, weights="imagenet" if weights.lower() == "imagenet" else weights, size=size)
    feats = [base.get_layer(n).output for n in SKIPS[name]]
    y = _conv_bn(feats[-1], _WIDTHS[0], "decoder_top")
    stages = 4 if FINEST == 2 else 3
    for i, (skip, width, skip_width) in enumerate(list(zip(reversed(feats[:-1]), _WIDTHS, _SKIP_WIDTHS))[:stages]):
        y = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder_up{i}")(y)
        s = _conv_bn(skip, skip_width, f"decoder_skip{i}")
        y = keras.layers.Concatenate(name=f"decoder_cat{i}")([y, s])
        y = _conv_bn(y, width, f"decoder_block{i}", separable=True)
    logits = keras.layers.Conv2D(num_classes, 1, name="head_logits")(y)
    logits = keras.layers.UpSampling2D(FINEST, interpolation="bilinear", name="head_resize")(logits)
    out = keras.layers.Softmax(dtype="float32", name="head_output")(logits)
    model = keras.Model(inputs, out, name=f"tlkeras_seg_{spec.name}")
    freeze_encoder(model)
    return model


def freeze_encoder(model) -> None:
    """Freezes every encoder layer (BatchNorm then runs in inference mode)."""
    for layer in encoder_layers(model):
        layer.trainable = False


def unfreeze_encoder(model, top: int | None = None) -> int:
    """Unfreezes the encoder's top ``top`` layers (all when None), BatchNorm kept frozen.

    Returns the number of trainable encoder layers. Recompile afterwards.
    """
    layers = encoder_layers(model)
    chosen = layers if top is None else layers[-top:]
    count = 0
    for layer in chosen:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        count += int(bool(layer.weights))
    return count
