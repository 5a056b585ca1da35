"""The detector: a registry backbone's multi-scale features, a light FPN neck and a shared SSDLite head.

Raw RGB pixels in [0, 255] go in (preprocessing inside the model); two outputs come out, in the
layout MediaPipe's ObjectDetector takes without in-model NMS: ``location`` ``[1, N, 4]`` (box
encodings against :func:`~tlkeras.core.detection.anchors.make_anchors`) and ``score`` ``[1, N, C]``
(logits; the decoder applies the sigmoid). Every op is a TFLite builtin (convolutions, depthwise
convolutions, nearest-neighbour resizing, add, reshape, concatenation).

New layers are named ``head_*`` so the classification engine's freeze / unfreeze helpers
(:func:`tlkeras.core.models.freeze_backbone`, :func:`~tlkeras.core.models.unfreeze_backbone`)
treat the neck and head as the part phase 1 trains.
"""

from __future__ import annotations

import math

from tlkeras._backend import keras, tf
from tlkeras.core.backbones import get_backbone, load_backbone_weights, preprocessing_layers
from tlkeras.core.detection.anchors import AnchorConfig
from tlkeras.core.models import freeze_backbone
from tlkeras.errors import TLKerasError

__all__ = ["FEATURE_LAYERS", "build_detector", "detection_loss", "NECK_WIDTH"]

# Backbone layers whose outputs are the stride-8, 16 and 32 feature maps.
FEATURE_LAYERS = {
    "mobilenet_v2": ("block_6_expand_relu", "block_13_expand_relu", "out_relu"),
    "mobilenet": ("conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
}
NECK_WIDTH = 96
PRIOR = 0.01  # initial foreground probability of every anchor (focal loss' prior)


def _sep(x, filters: int, name: str, strides: int = 1, bn: bool = True):
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=not bn, name=f"{name}_dw")(x)
    if bn:
        x = keras.layers.BatchNormalization(name=f"{name}_dwbn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwrelu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=not bn, name=f"{name}_pw")(x)
    if bn:
        x = keras.layers.BatchNormalization(name=f"{name}_pwbn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x)


class _SharedTower:
    """Depthwise + pointwise convolutions whose weights every pyramid level shares."""

    def __init__(self, name: str, depth: int, width: int, out: int, bias: float = 0.0):
        self.layers = []
        for i in range(depth):
            self.layers += [keras.layers.DepthwiseConv2D(3, padding="same", name=f"{name}{i}_dw"),
                            keras.layers.Conv2D(width, 1, name=f"{name}{i}_pw"),
                            keras.layers.ReLU(6.0, name=f"{name}{i}_relu")]
        self.out = keras.layers.Conv2D(out, 3, padding="same", name=f"{name}_out",
                                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=1),
                                       bias_initializer=keras.initializers.Constant(bias))

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


def build_detector(model_config, num_classes: int, anchors: AnchorConfig) -> keras.Model:
    """Builds the detector, backbone frozen (phase 1).

    Args:
        model_config: backbone (``mobilenet_v2`` or ``mobilenet``), ``alpha`` and ``weights``
            (``imagenet``, ``none`` or a local weights file).
        num_classes: number of object classes (no background class: scores are sigmoids).
        anchors: the anchor layout (its ``image_size`` is the input size).

    Raises:
        TLKerasError: a backbone without named feature levels, an input size that is not a
            multiple of 32, weights that do not fit.
    """
    spec = get_backbone(model_config.backbone)
    if spec.name not in FEATURE_LAYERS:
        raise TLKerasError(f"detection needs a backbone with named feature levels; use --backbone "
                           f"{' or '.join(sorted(FEATURE_LAYERS))}, not {model_config.backbone}")
    size = anchors.image_size
    if size % 32 or size < 96:
        raise TLKerasError(f"detection image size {size} must be a multiple of 32 and at least 96 (e.g. --image-size 320)")
    if tuple(anchors.strides) != (8, 16, 32, 64):
        raise TLKerasError("the detector's levels are strides 8, 16, 32 and 64")
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    base = spec.build(x, alpha=model_config.alpha, weights=None, size=size)
    weights = str(model_config.weights).strip()
    if weights.lower() != "none":
        body = [layer for layer in base.layers if not layer.name.startswith("preprocess_") and not isinstance(layer, keras.layers.InputLayer)]
        load_backbone_weights(spec, body, alpha=model_config.alpha, weights="imagenet" if weights.lower() == "imagenet" else weights, size=size)
    c3, c4, c5 = (base.get_layer(n).output for n in FEATURE_LAYERS[spec.name])
    w = NECK_WIDTH
    l3, l4, l5 = (keras.layers.Conv2D(w, 1, name=f"head_lateral{i}")(c) for i, c in zip((3, 4, 5), (c3, c4, c5)))
    p5 = l5
    p4 = keras.layers.Add(name="head_top_down4")([l4, keras.layers.UpSampling2D(2, name="head_up5")(p5)])
    p3 = keras.layers.Add(name="head_top_down3")([l3, keras.layers.UpSampling2D(2, name="head_up4")(p4)])
    levels = [_sep(p, w, f"head_smooth{i}") for i, p in zip((3, 4, 5), (p3, p4, p5))]
    levels.append(_sep(levels[-1], w, "head_extra6", strides=2))
    a = anchors.per_location
    box_tower = _SharedTower("head_box", 2, w, a * 4)
    cls_tower = _SharedTower("head_cls", 2, w, a * num_classes, bias=-math.log((1 - PRIOR) / PRIOR))
    locations, scores = [], []
    for i, level in enumerate(levels):
        locations.append(keras.layers.Reshape((-1, 4), name=f"head_loc_reshape{i}")(box_tower(level)))
        scores.append(keras.layers.Reshape((-1, num_classes), name=f"head_cls_reshape{i}")(cls_tower(level)))
    location = keras.layers.Concatenate(axis=1, name="location", dtype="float32")(locations)
    score = keras.layers.Concatenate(axis=1, name="score", dtype="float32")(scores)
    model = keras.Model(inputs, [location, score], name=f"tlkeras_detector_{spec.name}")
    expected = sum(anchors.grid(s) ** 2 for s in anchors.strides) * a
    if model.outputs[0].shape[1] != expected:  # pragma: no cover - guards the anchor layout
        raise TLKerasError(f"internal error: {model.outputs[0].shape[1]} box outputs for {expected} anchors")
    freeze_backbone(model)
    return model


def detection_loss(box_targets, class_targets, location, logits, num_classes: int, *, alpha: float = 0.25, gamma: float = 2.0,
                   box_weight: float = 1.0):
    """Focal loss on the class logits plus Huber loss on the positives' box encodings.

    ``class_targets``: class id (positive), -1 (background), -2 (ignored). Both terms are divided
    by the number of positives in the batch (at least 1). Returns ``(total, class part, box part)``.
    """
    positive = class_targets >= 0
    valid = tf.cast(class_targets >= -1, tf.float32)
    onehot = tf.one_hot(tf.maximum(class_targets, 0), num_classes) * tf.cast(positive, tf.float32)[..., None]
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=logits)
    p = tf.sigmoid(logits)
    pt = onehot * p + (1 - onehot) * (1 - p)
    weight = (onehot * alpha + (1 - onehot) * (1 - alpha)) * tf.pow(1 - pt, gamma)
    npos = tf.maximum(tf.reduce_sum(tf.cast(positive, tf.float32)), 1.0)
    cls_loss = tf.reduce_sum(weight * ce * valid[..., None]) / npos
    diff = tf.abs(box_targets - location)
    huber = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
    box_loss = tf.reduce_sum(tf.reduce_sum(huber, -1) * tf.cast(positive, tf.float32)) / npos
    return cls_loss + box_weight * box_loss, cls_loss, box_loss
