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


def build_detector(model_config, num_classes: int, anchors: AnchorConfig, *, with_parts: bool = False):
    """Builds the detector, backbone frozen (phase 1).

    Args:
        model_config: backbone (``mobilenet_v2`` or ``mobilenet``), ``alpha`` and ``weights``
            (``imagenet``, ``none`` or a local weights file).
        num_classes: number of object classes (no background class: scores are sigmoids).
        anchors: the anchor layout (its ``image_size`` is the input size).

    Returns:
        The model; with ``with_parts``, ``(model, feature model, head model)``: raw pixels -> the
        three feature maps, and feature maps -> outputs, sharing the model's layers.

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
    features = [base.get_layer(n).output for n in FEATURE_LAYERS[spec.name]]
    neck_head = NeckHead(len(anchors.ratios) * len(anchors.scales), num_classes)
    location, score = neck_head(features)
    model = keras.Model(inputs, [location, score], name=f"tlkeras_detector_{spec.name}")
    expected = sum(anchors.grid(s) ** 2 for s in anchors.strides) * anchors.per_location
    if model.outputs[0].shape[1] != expected:  # pragma: no cover - guards the anchor layout
        raise TLKerasError(f"internal error: {model.outputs[0].shape[1]} box outputs for {expected} anchors")
    freeze_backbone(model)
    if not with_parts:
        return model
    return model, keras.Model(inputs, features, name="detector_features"), neck_head.head_model([f.shape[1:] for f in features])


class _Sep:
    """Depthwise 3x3 + BN + ReLU6, pointwise + BN + ReLU6, as layer objects (applied once per level)."""

    def __init__(self, filters: int, name: str, strides: int = 1):
        self.layers = [keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"),
                       keras.layers.BatchNormalization(name=f"{name}_dwbn"), keras.layers.ReLU(6.0, name=f"{name}_dwrelu"),
                       keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw"),
                       keras.layers.BatchNormalization(name=f"{name}_pwbn"), keras.layers.ReLU(6.0, name=f"{name}_relu")]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class NeckHead:
    """The FPN neck and the shared head as layer objects, callable on any three feature tensors, so
    the same weights serve the full model and a head model on cached features (phase 1)."""

    def __init__(self, per_location: int, num_classes: int):
        w = NECK_WIDTH
        self.num_classes = num_classes
        self.laterals = [keras.layers.Conv2D(w, 1, name=f"head_lateral{i}") for i in (3, 4, 5)]
        self.add4, self.add3 = keras.layers.Add(name="head_top_down4"), keras.layers.Add(name="head_top_down3")
        self.up5, self.up4 = keras.layers.UpSampling2D(2, name="head_up5"), keras.layers.UpSampling2D(2, name="head_up4")
        self.smooth = [_Sep(w, f"head_smooth{i}") for i in (3, 4, 5)]
        self.extra = _Sep(w, "head_extra6", strides=2)
        self.box_tower = _SharedTower("head_box", 2, w, per_location * 4)
        self.cls_tower = _SharedTower("head_cls", 2, w, per_location * num_classes, bias=-math.log((1 - PRIOR) / PRIOR))
        self.loc_reshape = [keras.layers.Reshape((-1, 4), name=f"head_loc_reshape{i}") for i in range(4)]
        self.cls_reshape = [keras.layers.Reshape((-1, num_classes), name=f"head_cls_reshape{i}") for i in range(4)]
        self.location = keras.layers.Concatenate(axis=1, name="location", dtype="float32")
        self.score = keras.layers.Concatenate(axis=1, name="score", dtype="float32")

    def __call__(self, features):
        l3, l4, l5 = (conv(c) for conv, c in zip(self.laterals, features))
        p4 = self.add4([l4, self.up5(l5)])
        p3 = self.add3([l3, self.up4(p4)])
        levels = [sep(p) for sep, p in zip(self.smooth, (p3, p4, l5))]
        levels.append(self.extra(levels[-1]))
        locations = [r(self.box_tower(level)) for r, level in zip(self.loc_reshape, levels)]
        scores = [r(self.cls_tower(level)) for r, level in zip(self.cls_reshape, levels)]
        return self.location(locations), self.score(scores)

    def head_model(self, feature_shapes) -> keras.Model:
        """Feature maps -> (location, score) through these same layers (training it trains the full model's head)."""
        inputs = [keras.Input(tuple(shape), name=f"feature{i}") for i, shape in enumerate(feature_shapes)]
        return keras.Model(inputs, list(self(inputs)), name="detector_head")


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
