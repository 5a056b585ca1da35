"""A registry of pretrained backbones.

Each :class:`BackboneSpec` knows how to build its keras.applications model, its default and minimum
input size, the preprocessing its weights expect (applied inside the model, so saved and exported
models take raw 0-255 pixels), and how to split its layers into blocks for unfreezing from the top.
TF-Hub feature-vector models are backbones too: ``hub:<handle-or-SavedModel-dir>``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlkeras._backend import keras
from tlkeras.errors import TLKerasError, WeightsError

__all__ = [
    "BackboneSpec",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "block_ids",
    "Recipe",
    "recipe_for",
    "apply_recipe_defaults",
    "SMALL_DATA_PER_CLASS",
]

PREPROCESSING = {
    # mode: what the weights expect, given raw RGB pixels in [0, 255]
    "tf": "scale to [-1, 1]",
    "caffe": "RGB -> BGR, subtract the ImageNet channel means",
    "builtin": "none (the model rescales internally)",
    "unit": "scale to [0, 1]",
}


@dataclass(frozen=True)
class Recipe:
    """A backbone family's fine-tuning defaults, used for every config field the user left unset (None).

    Attributes:
        phase2_lr_factor: phase-2 learning rate / phase-1 learning rate.
        unfreeze: what phase 2 trains (``blocks:N``, ``layers:N``, ``all``).
        batch_size: images per batch.
        dropout: dropout before the output layer.
        warmup_epochs: linear warm-up at the start of phase 2.
        batchnorm: ``frozen`` (BatchNorm keeps its ImageNet statistics and runs in inference mode)
            or ``train``.
        basis: what the values rest on (a measurement here, or the public guide they follow).
    """

    phase2_lr_factor: float = 0.1
    unfreeze: str = "blocks:6"
    batch_size: int = 32
    dropout: float = 0.2
    warmup_epochs: float = 1.0
    batchnorm: str = "frozen"
    basis: str = ""


# With fewer training images per class than this, the recipe's unset phase-2 fields get gentler
# (see apply_recipe_defaults).
SMALL_DATA_PER_CLASS = 50


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone family and how to fine-tune it.

    Attributes:
        name: registry name (lower case).
        constructor: name of the ``keras.applications`` function.
        default_size: the input size its ImageNet weights were trained at.
        min_size: the smallest input size the architecture accepts.
        preprocessing: a key of ``PREPROCESSING``.
        block_pattern: regex whose first group names the block a layer belongs to; layers that do
            not match belong to the block before them (the stem is block "stem").
        block_end_pattern: alternatively, a regex matching the last layer of each block (for
            architectures whose layer names do not carry a block id, like InceptionV3).
        has_alpha: whether the family takes a width multiplier ``alpha``.
        alphas: the widths with published ImageNet weights.
        imagenet_sizes: input sizes with published ImageNet weights (others load the default).
        aliases: other accepted names.
        recipe: the family's fine-tuning defaults (:class:`Recipe`).
        modality: ``image`` or ``text``. For text encoders ``default_size`` is the default
            sequence length in tokens and ``min_size`` the shortest one accepted.
        handle: text encoders from TF-Hub: the encoder's handle (URL); empty for the word model.
        preprocess: the TF-Hub preprocessing model that pairs with ``handle`` (BERT family);
            empty for encoders that take raw strings.
    """

    name: str
    constructor: str
    default_size: int
    min_size: int
    preprocessing: str
    block_pattern: str | None = None
    block_end_pattern: str | None = None
    has_alpha: bool = False
    alphas: tuple[float, ...] = ()
    imagenet_sizes: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe = field(default_factory=Recipe)
    modality: str = "image"
    handle: str = ""
    preprocess: str = ""

    def describe(self) -> str:
        if self.modality == "text":
            what = self.handle or "an average of word embeddings (vocabulary from the training texts, optional --word-vectors), fully offline"
            pair = f" + preprocessing {self.preprocess}" if self.preprocess else ""
            return f"{self.name} (text): {what}{pair}; default sequence length {self.default_size}"
        return (
            f"{self.name}: keras.applications.{self.constructor}, default {self.default_size}px "
            f"(min {self.min_size}), preprocessing: {PREPROCESSING[self.preprocessing]}"
        )

    def build(self, input_tensor, *, alpha: float | None, weights: str | None, size: int):
        """Returns the keras.applications model built on ``input_tensor`` (no top, no pooling)."""
        fn: Callable = getattr(keras.applications, self.constructor)
        kwargs = dict(self.extra_kwargs)
        if self.has_alpha and alpha is not None:
            kwargs["alpha"] = alpha
        return fn(
            include_top=False,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=(size, size, 3),
            pooling=None,
            **kwargs,
        )


# Handles that are downloads, not local folders (``hub:`` image and text models).
HUB_URL_PREFIXES = ("https://", "http://", "tfhub.dev", "www.kaggle.com", "kaggle.com")

_REGISTRY: dict[str, BackboneSpec] = {}
_ALIASES: dict[str, str] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Adds ``spec`` to the registry (overwrites an entry of the same name). Returns it."""
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def list_backbones(modality: str | None = "image") -> list[str]:
    """Returns the registered backbone names of ``modality`` (``image``, ``text``; None: all), sorted.

    ``hub:<handle>`` is accepted too."""
    return sorted(name for name, spec in _REGISTRY.items() if modality is None or spec.modality == modality)


def get_backbone(name: str) -> BackboneSpec:
    """Looks up a backbone by name or alias (case and ``-``/``_`` insensitive).

    Raises:
        TLKerasError: for an unknown name, listing the closest registered names.
    """
    if str(name).startswith("hf:"):  # a Hugging Face BERT-family checkpoint folder (tlkeras.core.text.hf)
        return _HF_SPEC
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    candidates = sorted(set(_REGISTRY) | set(_ALIASES))
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    close = sorted({_ALIASES.get(c, c) for c in close})
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(list_backbones(None))}"
    raise TLKerasError(f"unknown backbone {name!r}; {hint} (or hub:<handle-or-dir>)")


_MOBILENET_SIZES = (128, 160, 192, 224)
# Measured here on flowers5 with MobileNet-0.25 ImageNet weights (val 0.876 / test 0.798 over 3
# seeds against the Keras guide's 0.811 / 0.764; DESIGN.md).
_MOBILENET_RECIPE = Recipe(basis="measured: flowers5, MobileNet-0.25 ImageNet weights, seeds 0-2 (benchmarks/core.md)")
# MobileNetV2-1.0 overfits in phase 2 with the MobileNet recipe on small sets (issue 13: val loss
# 0.13 after the probe, 0.17-0.43 after fine-tuning on 244 images); the TensorFlow tutorial
# fine-tunes its top third at a tenth of the head's rate. Gentler: fewer blocks, a lower factor.
_MOBILENET_V2_RECIPE = Recipe(phase2_lr_factor=0.03, unfreeze="blocks:5",
                              basis="measured: flowers5 and beans, MobileNetV2-1.0 ImageNet weights (benchmarks/core_matrix.md)")
_MOBILENET_V3_RECIPE = Recipe(phase2_lr_factor=0.03, unfreeze="blocks:4",
                              basis="unmeasured (no offline weights): MobileNetV2's recipe, one block fewer for the smaller V3 blocks")
# The Keras EfficientNet fine-tuning guide: unfreeze the top 20 layers, BatchNorm frozen, a small rate.
_EFFICIENTNET_RECIPE = Recipe(phase2_lr_factor=0.03, unfreeze="layers:20",
                              basis="unmeasured (no offline weights): the Keras EfficientNet fine-tuning guide (top 20 layers, BatchNorm frozen)")
_RESNET_RECIPE = Recipe(phase2_lr_factor=0.1, unfreeze="blocks:3",
                        basis="unmeasured (no offline weights): the last stage of ResNet50 (3 blocks), as in the Keras transfer-learning guide")
_INCEPTION_RECIPE = Recipe(phase2_lr_factor=0.1, unfreeze="blocks:2",
                           basis="unmeasured (no offline weights): the Keras applications docs' example (top 2 inception blocks)")
for _spec in [
    BackboneSpec(
        "mobilenet", "MobileNet", 224, 32, "tf",
        block_pattern=r"^conv_(?:pad|dw|pw)_(\d+)",
        has_alpha=True, alphas=(0.25, 0.5, 0.75, 1.0), imagenet_sizes=_MOBILENET_SIZES,
        aliases=("mobilenet_v1", "mobilenetv1"), recipe=_MOBILENET_RECIPE,
    ),
    BackboneSpec(
        "mobilenet_v2", "MobileNetV2", 224, 32, "tf",
        block_pattern=r"^(block_\d+|expanded_conv)_",
        has_alpha=True, alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        imagenet_sizes=(96, 128, 160, 192, 224), aliases=("mobilenetv2",), recipe=_MOBILENET_V2_RECIPE,
    ),
    BackboneSpec(
        "mobilenet_v3_small", "MobileNetV3Small", 224, 32, "builtin",
        block_pattern=r"^(expanded_conv(?:_\d+)?)/",
        has_alpha=True, alphas=(0.75, 1.0), aliases=("mobilenetv3small",), recipe=_MOBILENET_V3_RECIPE,
    ),
    BackboneSpec(
        "mobilenet_v3_large", "MobileNetV3Large", 224, 32, "builtin",
        block_pattern=r"^(expanded_conv(?:_\d+)?)/",
        has_alpha=True, alphas=(0.75, 1.0), aliases=("mobilenetv3large",), recipe=_MOBILENET_V3_RECIPE,
    ),
    BackboneSpec(
        "inception_v3", "InceptionV3", 299, 75, "tf",
        block_end_pattern=r"^mixed\d+$", aliases=("inceptionv3",), recipe=_INCEPTION_RECIPE,
    ),
    BackboneSpec("resnet50", "ResNet50", 224, 32, "caffe", block_pattern=r"^(conv\d_block\d+)_", recipe=_RESNET_RECIPE),
    BackboneSpec(
        "resnet50_v2", "ResNet50V2", 224, 32, "tf",
        block_pattern=r"^(conv\d_block\d+)_", aliases=("resnet50v2",), recipe=_RESNET_RECIPE,
    ),
    BackboneSpec("efficientnet_b0", "EfficientNetB0", 224, 32, "builtin", block_pattern=r"^(block\d+[a-z])_", recipe=_EFFICIENTNET_RECIPE),
    BackboneSpec("efficientnet_b1", "EfficientNetB1", 240, 32, "builtin", block_pattern=r"^(block\d+[a-z])_", recipe=_EFFICIENTNET_RECIPE),
    BackboneSpec("efficientnet_b2", "EfficientNetB2", 260, 32, "builtin", block_pattern=r"^(block\d+[a-z])_", recipe=_EFFICIENTNET_RECIPE),
    BackboneSpec("efficientnet_b3", "EfficientNetB3", 300, 32, "builtin", block_pattern=r"^(block\d+[a-z])_", recipe=_EFFICIENTNET_RECIPE),
    BackboneSpec(
        "efficientnet_v2_b0", "EfficientNetV2B0", 224, 32, "builtin",
        block_pattern=r"^(block\d+[a-z])_", aliases=("efficientnetv2b0", "efficientnet_v2b0"), recipe=_EFFICIENTNET_RECIPE,
    ),
]:
    register_backbone(_spec)
for _n in ("b0", "b1", "b2", "b3"):
    _ALIASES[f"efficientnet{_n}"] = f"efficientnet_{_n}"

# Text encoders (built by tlkeras.core.text.encoders). Phase 1 is the linear probe on the frozen
# encoder's pooled output either way; what phase 2 opens and how fast differs per family.
# The word model: phase 2 trains the embedding itself, from scratch for words without a vector,
# so it needs a rate close to the head's (measured on data/sentences: benchmarks/text.md).
_WORD_RECIPE = Recipe(phase2_lr_factor=0.5, unfreeze="all", batch_size=32, dropout=0.3, warmup_epochs=0.0,
                      basis="measured: data/sentences, 3 seeds (benchmarks/text.md)")
# BERT fine-tuning as in "Classify text with BERT" and Model Maker: the whole encoder at ~3e-5
# (0.01 x the head's 3e-3) with warm-up; BatchNorm does not occur in BERT.
_BERT_RECIPE = Recipe(phase2_lr_factor=0.01, unfreeze="all", batch_size=32, dropout=0.1, warmup_epochs=1.0,
                      basis="the TensorFlow tutorial 'Classify text with BERT' (whole encoder, ~3e-5 with warm-up)")
_SENTENCE_RECIPE = Recipe(phase2_lr_factor=0.03, unfreeze="all", batch_size=32, dropout=0.2, warmup_epochs=1.0,
                          basis="the TensorFlow tutorial 'Text classification with TF Hub' (trainable nnlm at a low rate)")
# hf: checkpoints (BERT, MiniLM): the whole encoder at 0.02 x the head's rate with one warm-up epoch;
# MiniLM-size encoders take higher rates than BERT-base (sentence-transformers fine-tunes at 2e-5..1e-4).
_HF_RECIPE = Recipe(phase2_lr_factor=0.02, unfreeze="all", batch_size=32, dropout=0.1, warmup_epochs=1.0,
                    basis="BERT fine-tuning (whole encoder, low rate with warm-up), measured on data/sentences with MiniLM (docs/bert.md)")
_HF_SPEC = BackboneSpec("hf", "", 128, 2, "builtin", modality="text", recipe=_HF_RECIPE)
_UNCASED = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
for _spec in [
    BackboneSpec("word_embedding", "", 128, 2, "builtin", modality="text", aliases=("average_word_embedding", "awe", "word_vectors"),
                 recipe=_WORD_RECIPE),
    BackboneSpec("small_bert", "", 128, 8, "builtin", modality="text", recipe=_BERT_RECIPE, aliases=("bert_small",),
                 handle="https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-4_H-512_A-8/2", preprocess=_UNCASED),
    BackboneSpec("mobilebert", "", 128, 8, "builtin", modality="text", recipe=_BERT_RECIPE, aliases=("mobile_bert",),
                 handle="https://tfhub.dev/tensorflow/mobilebert_en_uncased_L-24_H-128_B-512_A-4_F-4_OPT/1", preprocess=_UNCASED),
    BackboneSpec("bert_base", "", 128, 8, "builtin", modality="text", recipe=_BERT_RECIPE, aliases=("bert",),
                 handle="https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4", preprocess=_UNCASED),
    BackboneSpec("nnlm_en_dim50", "", 128, 1, "builtin", modality="text", recipe=_SENTENCE_RECIPE, aliases=("nnlm",),
                 handle="https://tfhub.dev/google/nnlm-en-dim50/2"),
    BackboneSpec("universal_sentence_encoder", "", 128, 1, "builtin", modality="text", recipe=_SENTENCE_RECIPE, aliases=("use",),
                 handle="https://tfhub.dev/google/universal-sentence-encoder/4"),
]:
    register_backbone(_spec)


_HUB_RECIPE = Recipe(basis="TF-Hub modules: the MobileNet recipe (most hub feature vectors are MobileNets)")
_RECIPE_FIELDS = {
    "phase2_lr_factor": ("train", "phase2_lr_factor"), "unfreeze": ("train", "unfreeze"),
    "batch_size": ("data", "batch_size"), "dropout": ("model", "dropout"),
    "warmup_epochs": ("train", "warmup_epochs"), "batchnorm": ("train", "batchnorm"),
}


def recipe_for(backbone: str, modality: str = "image") -> Recipe:
    """The fine-tuning defaults of ``backbone``'s family (TF-Hub image modules get the MobileNet
    recipe; TF-Hub text encoders the BERT one)."""
    if str(backbone).startswith("hub:"):
        return _BERT_RECIPE if modality == "text" else _HUB_RECIPE
    return get_backbone(backbone).recipe


def apply_recipe_defaults(config, *, train_count: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """Fills the recipe fields the user left unset (None) from the backbone family's :class:`Recipe`.

    The fields are ``train.phase2_lr_factor``, ``train.unfreeze``, ``data.batch_size``,
    ``model.dropout``, ``train.warmup_epochs`` and ``train.batchnorm``; a value the user set is
    never changed. Small-data rule: with ``train_count / num_classes`` below
    :data:`SMALL_DATA_PER_CLASS` training images per class, the unset phase-2 fields get gentler:
    half the family's phase-2 learning-rate factor and half its unfrozen blocks or layers (at
    least one), because fine-tuning many layers on few images overfits (and the phase-1 model is
    kept whenever phase 2 does not improve on it anyway).

    Returns:
        ``{"family": ..., "defaults": {field: value used}, "small_data": message or None, "basis": ...}``.

    Side effect: sets the unset fields of ``config`` (a RunConfig) in place; idempotent.
    """
    recipe = recipe_for(config.model.backbone, getattr(config.data, "modality", "image"))
    filled: dict[str, Any] = {}
    for name, (section, attr) in _RECIPE_FIELDS.items():
        part = getattr(config, section)
        if getattr(part, attr, None) is None:
            setattr(part, attr, getattr(recipe, name))
            filled[name] = getattr(recipe, name)
    small = None
    if train_count and num_classes and train_count / num_classes < SMALL_DATA_PER_CLASS:
        gentler = []
        if "phase2_lr_factor" in filled:
            config.train.phase2_lr_factor = filled["phase2_lr_factor"] = recipe.phase2_lr_factor / 2
            gentler.append(f"phase2_lr_factor {config.train.phase2_lr_factor:g}")
        kind, _, count = str(filled.get("unfreeze", "")).partition(":")
        if kind in ("blocks", "layers") and count.isdigit():
            config.train.unfreeze = filled["unfreeze"] = f"{kind}:{max(1, int(count) // 2)}"
            gentler.append(f"unfreeze {config.train.unfreeze}")
        if gentler:
            small = (
                f"small data ({train_count / num_classes:.0f} training images per class < {SMALL_DATA_PER_CLASS}): "
                f"gentler phase 2: {', '.join(gentler)} (set them to override)"
            )
    name = "hub" if str(config.model.backbone).startswith("hub:") else get_backbone(config.model.backbone).name
    return {"family": name, "defaults": filled, "small_data": small, "basis": recipe.basis}


def block_ids(spec: BackboneSpec, layer_names: list[str]) -> list[str]:
    """Assigns each backbone layer (in topological order) to a block.

    Layers matching ``block_pattern`` take the block its first group names; the others stay in the
    current block (the stem before the first match, the final convolutions after the last block).
    With ``block_end_pattern``, a new block starts after each matching layer.
    """
    ids: list[str] = []
    if spec.block_end_pattern:
        index = 0
        end = re.compile(spec.block_end_pattern)
        for name in layer_names:
            ids.append(f"block{index}")
            if end.search(name):
                index += 1
        return ids
    pattern = re.compile(spec.block_pattern or r"$^")
    current = "stem"
    for name in layer_names:
        match = pattern.search(name)
        if match:
            current = match.group(1)
        ids.append(current)
    return ids


# ---------------------------------------------------------------------------------------------
# Preprocessing layers (no Lambda layers: models must load with Keras' safe mode on)


def preprocessing_layers(mode: str) -> list:
    """Returns the layers that turn raw 0-255 RGB pixels into what the backbone expects."""
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_scale")]
    if mode == "unit":
        return [keras.layers.Rescaling(1.0 / 255.0, name="preprocess_scale")]
    if mode == "builtin":
        return []
    if mode == "caffe":
        # RGB -> BGR and mean subtraction as one frozen 1x1 convolution: a builtin op that
        # TFLite converts and tfmot understands, unlike a Lambda layer.
        means_bgr = np.array([103.939, 116.779, 123.68], dtype="float32")
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel, in_channel in enumerate((2, 1, 0)):
            kernel[0, 0, in_channel, out_channel] = 1.0
        layer = keras.layers.Conv2D(
            3, 1, name="preprocess_caffe", trainable=False,
            kernel_initializer=keras.initializers.Constant(kernel),
            bias_initializer=keras.initializers.Constant(-means_bgr),
        )
        return [layer]
    raise ValueError(f"unknown preprocessing mode {mode!r}")


# ---------------------------------------------------------------------------------------------
# Weights


def _weights_cache_hint(spec: BackboneSpec) -> str:
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (
        f"could not download ImageNet weights for {spec.name} (no network?); use --weights none, "
        f"--weights /path/to/weights.h5, or pre-fill Keras' cache {cache} on a machine with network"
    )


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 160 else text[:157] + "..."


def load_backbone_weights(spec: BackboneSpec, target, *, alpha: float | None, weights: str, size: int) -> None:
    """Loads ``weights`` (``imagenet`` or a file) into ``target``, the backbone built in the model.

    The weights load into a standalone copy of the architecture first (the layout Keras' weight
    files expect), then move layer by layer into ``target``; errors become one-line messages.

    Raises:
        TLKerasError: weights offline, a missing file, or a file for another architecture/width.
    """
    if weights == "imagenet":
        if spec.has_alpha and spec.alphas and alpha is not None and alpha not in spec.alphas:
            raise WeightsError(
                f"{spec.name} has ImageNet weights only for alpha in {list(spec.alphas)}, got "
                f"{alpha}; pick one of those or use --weights none"
            )
        source_weights = "imagenet"
        weight_size = size
        if spec.imagenet_sizes and size not in spec.imagenet_sizes:
            weight_size = spec.default_size  # convolution weights do not depend on input size
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {weights} does not exist; pass imagenet, none or a path to a "
                f"weights file for {spec.name}"
            )
        source_weights = str(path)
        weight_size = size
    try:
        standalone = spec.build(None, alpha=alpha, weights=source_weights, size=weight_size)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for these cases
        text = str(exc)
        if "URL fetch failure" in text or "Name or service not known" in text or isinstance(exc, OSError) and weights == "imagenet":
            raise WeightsError(_weights_cache_hint(spec)) from None
        width = f" alpha={alpha}" if spec.has_alpha else ""
        raise WeightsError(
            f"weights file {weights} does not fit {spec.name}{width} at {weight_size}px "
            f"({_short(exc)}); pass the weights made for this architecture and width"
        ) from None
    source_layers = [l for l in standalone.layers if l.weights]
    target_layers = [l for l in target if l.weights]
    if len(source_layers) != len(target_layers):  # pragma: no cover - same constructor both sides
        raise TLKerasError(f"internal error: {spec.name} layer layout differs between builds")
    for src, dst in zip(source_layers, target_layers):
        dst.set_weights(src.get_weights())
    del standalone


# ---------------------------------------------------------------------------------------------
# TF-Hub


@keras.saving.register_keras_serializable(package="tlkeras")
class HubBackbone(keras.layers.Layer):
    """A TF-Hub feature-vector model as one layer, always run in inference mode.

    ``hub.KerasLayer`` would run the SavedModel's BatchNorm in training mode once it is trainable;
    fine-tuning a few hundred images that way wrecks the pretrained statistics, so this wrapper
    always calls it with ``training=False`` while its weights still train in phase 2.
    """

    def __init__(self, handle: str, output_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.handle = handle
        self.output_dim = output_dim
        hub = __import__("tlkeras._backend", fromlist=["hub"]).hub()
        self._hub_layer = hub.KerasLayer(handle, trainable=True, name=f"{self.name}_module")

    def build(self, input_shape):
        self._hub_layer.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        features = self._hub_layer(inputs, training=False)
        if isinstance(features, dict):
            features = features.get("default", next(iter(features.values())))
        return features

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "output_dim": self.output_dim}


def is_hub_url(handle: str) -> bool:
    """Whether a TF-Hub handle is a download (URL) rather than a local folder."""
    return "://" in handle or handle.startswith(HUB_URL_PREFIXES)


def hub_location(handle: str) -> tuple[str, str]:
    """What a TF-Hub handle points at: ``("url", handle)``, ``("dir", resolved folder)``, or
    ``("missing" | "not_saved_model", handle)``; callers word the error for their flag."""
    if is_hub_url(handle):
        return "url", handle
    path = Path(handle).expanduser()
    if not path.exists():
        return "missing", handle
    if not (path / "saved_model.pb").is_file():
        return "not_saved_model", handle
    return "dir", str(path.resolve())


def build_hub_backbone(handle: str, image_tensor):
    """Builds a TF-Hub backbone on ``image_tensor`` (values in [0, 1]); returns its output tensor.

    Raises:
        TLKerasError: if the handle is a URL and there is no network, or the directory is not a
            SavedModel.
    """
    kind, resolved = hub_location(handle)
    is_url = kind == "url"
    if kind == "missing":
        raise TLKerasError(
            f"TF-Hub backbone {handle} is neither a URL nor an existing SavedModel directory; pass "
            f"hub:<folder with saved_model.pb> or hub:<https URL> (online), or list backbones with --list-backbones"
        )
    if kind == "not_saved_model":
        raise TLKerasError(f"{handle} is not a SavedModel directory (no saved_model.pb); pass hub:<the folder that holds saved_model.pb>")
    handle = resolved
    try:
        layer = HubBackbone(handle, name="backbone_hub", trainable=False)
        out = layer(image_tensor)
    except TLKerasError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub raises many types
        if is_url:
            raise TLKerasError(
                f"could not fetch TF-Hub model {handle} (no network?); download it where there is "
                f"network and pass the local SavedModel directory as hub:<dir>, or set "
                f"TFHUB_CACHE_DIR to a pre-filled cache"
            ) from None
        raise TLKerasError(f"could not load TF-Hub model {handle}: {_short(exc)}") from None
    if len(out.shape) != 2:
        raise TLKerasError(
            f"TF-Hub model {handle} returns shape {tuple(out.shape)}; use a feature-vector model "
            f"that returns (batch, features)"
        )
    return out
