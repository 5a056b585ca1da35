"""Explanations: Grad-CAM heatmaps, overlays on the input images, and a gallery of mistakes.

Grad-CAM (Selvaraju et al., ICCV 2017) weights the feature maps ``A_k`` of a convolutional layer
by the spatial mean of the gradient of a class score ``y_c`` with respect to them, and keeps the
positive part: ``relu(sum_k mean_ij(dy_c / dA_k) * A_k)``. The class score is the logit before
the head's softmax or sigmoid (the paper's choice: probabilities saturate and their gradients
vanish). The map is scaled to [0, 1] per image and resized bilinearly to the input size.

The default layer is the backbone's last convolutional feature map with at least
``min_cells`` x ``min_cells`` positions (7 x 7 for MobileNet at 224 px); at small input sizes,
where the last map is 1 x 1 or 2 x 2 and cannot localize anything, an earlier block's output is
used instead. Any layer with a 4-D output can be named explicitly.

Side effects: :func:`explain_images` writes overlay PNGs, :func:`mistakes_gallery` writes a
gallery PNG and a JSON list; everything else only computes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlkeras.core.tasks import task_of
from tlkeras.errors import TLKerasError

__all__ = [
    "gradcam",
    "cam_layer",
    "overlay",
    "gradcam_overlays",
    "explain_images",
    "mistakes_gallery",
    "collect_images",
]

_SKIP_TYPES = ("ZeroPadding2D", "Cropping2D", "InputLayer", "Dropout", "SpatialDropout2D")


def _candidates(model) -> list:
    """Backbone layers with a 4-D output (N x H x W x C), in graph order."""
    from tlkeras.core.models import backbone_layers

    out = []
    for layer in backbone_layers(model):
        if type(layer).__name__ in _SKIP_TYPES:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # shared layers have several outputs
            continue
        if len(shape) == 4 and shape[1] is not None:
            out.append(layer)
    return out


def cam_layer(model, layer: str | None = None, min_cells: int = 4) -> str:
    """The name of the layer Grad-CAM reads.

    Args:
        model: a tlkeras model (flat graph with ``head_pool``).
        layer: a layer name to use as is (checked to have a 4-D output).
        min_cells: without ``layer``: the last 4-D backbone output with at least this many
            positions per side (or the largest map, if none is that large).

    Raises:
        TLKerasError: an unknown layer or one without a spatial output; a model whose backbone
            is a single opaque layer (TF-Hub).
    """
    names = [l.name for l in model.layers]
    if layer is not None:
        if layer not in names:
            raise TLKerasError(f"the model has no layer {layer!r}; pass the name of a convolutional layer (e.g. {names[-5]})")
        shape = model.get_layer(layer).output.shape
        if len(shape) != 4:
            raise TLKerasError(f"layer {layer!r} outputs shape {tuple(shape)}; Grad-CAM needs a convolutional feature map (N x H x W x C)")
        return layer
    candidates = _candidates(model)
    if not candidates:
        raise TLKerasError(f"model {model.name} has no convolutional feature map in its graph (a TF-Hub backbone is one opaque layer); Grad-CAM needs a keras.applications backbone")
    big = [l for l in candidates if min(l.output.shape[1], l.output.shape[2]) >= min_cells]
    if big:
        return big[-1].name
    return max(candidates, key=lambda l: l.output.shape[1] * l.output.shape[2]).name


def _score_tensor(model):
    """The tensor whose entries are the class scores: the logits before the head's activation."""
    names = [l.name for l in model.layers]
    if "head_output" in names:
        layer = model.get_layer("head_output")
        if getattr(getattr(layer, "activation", None), "__name__", "") in ("softmax", "sigmoid"):
            return layer.get_input_at(0)  # the call inside ``model`` (head_model adds others)
    if len(model.outputs) != 1:
        raise TLKerasError("Grad-CAM needs a model with one output")
    return model.outputs[0]


def gradcam(model, images: np.ndarray, class_index: int | Sequence[int] | None = None, *, layer: str | None = None,
            batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps of ``images``.

    Args:
        model: a tlkeras model taking raw pixels.
        images: N x S x S x 3 pixels (0..255) at the model's input size.
        class_index: the class (output index) to explain: one for all images, one per image, or
            None for each image's predicted class.
        layer: the feature-map layer (default: :func:`cam_layer`).

    Returns:
        ``(heatmaps, classes, probabilities)``: N x S x S float32 in [0, 1] (all zeros where no
        location supports the class), the explained class per image, and the model's N x K
        outputs.

    Raises:
        TLKerasError: images of the wrong shape, a class index out of range, see :func:`cam_layer`.
    """
    from tlkeras._backend import keras, tf

    images = np.asarray(images)
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    if images.ndim != 4 or tuple(images.shape[1:3]) != size or images.shape[-1] != 3:
        raise TLKerasError(f"images have shape {images.shape}; the model takes N x {size[0]} x {size[1]} x 3")
    name = cam_layer(model, layer)
    probe = keras.Model(model.inputs, [model.get_layer(name).output, _score_tensor(model), model.outputs[0]])
    k = int(model.outputs[0].shape[-1])
    n = len(images)
    if class_index is None:
        chosen = None
    else:
        given = np.asarray(class_index, np.int64).reshape(-1)
        chosen = np.full(n, given[0]) if given.size == 1 else given
        if len(chosen) != n:
            raise TLKerasError(f"{len(chosen)} class indices for {n} images")
        if np.any(chosen < 0) or np.any(chosen >= k):
            raise TLKerasError(f"class index must be in [0, {k - 1}]")
    maps, classes, outputs = [], [], []
    for start in range(0, n, batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        with tf.GradientTape() as tape:
            features, scores, probs = probe(x, training=False)
            tape.watch(features)
            if chosen is None:
                c = tf.argmax(probs, axis=-1, output_type=tf.int32) if k > 1 else tf.zeros(tf.shape(probs)[0], tf.int32)
            else:
                c = tf.constant(chosen[start:start + batch_size], tf.int32)
            target = tf.gather(scores, c, axis=1, batch_dims=1)
        grads = tape.gradient(target, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)
        cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
        maps.append(tf.clip_by_value(cam, 0.0, 1.0).numpy())
        classes.append(c.numpy())
        outputs.append(probs.numpy())
    return np.concatenate(maps).astype(np.float32), np.concatenate(classes).astype(np.int64), np.concatenate(outputs).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blends a [0, 1] heatmap (any size) onto an RGB uint8 image; returns uint8 H x W x 3.

    The heatmap is resized to the image (bilinear) and colored with a matplotlib colormap;
    ``alpha`` is the heatmap's opacity where it is 1 (it fades out where the heatmap is 0, so
    the image stays visible outside the explained region).
    """
    import matplotlib
    from PIL import Image

    if not 0.0 <= alpha <= 1.0:
        raise TLKerasError(f"alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise TLKerasError(f"image must be H x W x 3, got {image.shape}")
    h, w = image.shape[:2]
    heat = np.asarray(heatmap, np.float32)
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((w, h), Image.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colors = matplotlib.colormaps[colormap](heat)[..., :3] * 255.0
    a = (alpha * (0.25 + 0.75 * heat))[..., None]
    return np.clip(image.astype(np.float32) * (1 - a) + colors * a, 0, 255).astype(np.uint8)


def gradcam_overlays(model, images: np.ndarray, classes: Sequence[int] | None = None, alpha: float = 0.45) -> list[np.ndarray]:
    """Grad-CAM overlays of ``images`` for ``classes`` (default: the predicted ones), one uint8
    image each; the shape ``tlkeras.report``'s gallery takes as ``overlays``."""
    heat, _, _ = gradcam(model, images, classes)
    return [overlay(img, h, alpha) for img, h in zip(images, heat)]


def collect_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expands files and folders (recursively) into image files, sorted within each folder, once each.

    Raises:
        TLKerasError: a path that does not exist, a file that is not an image, no images at all.
    """
    from tlkeras.core.data import IMAGE_EXTENSIONS

    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise TLKerasError(f"{p} is not an image ({', '.join(IMAGE_EXTENSIONS)})")
            found.append(p)
        else:
            raise TLKerasError(f"image path {p} does not exist; pass an image file or a folder of images")
    if not found:
        raise TLKerasError(f"no images found in {', '.join(map(str, paths))}")
    unique: dict[Path, Path] = {}
    for f in found:  # a file named twice (directly and through its folder) is explained once
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """Adds a black strip with ``text`` under an image."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    canvas = Image.new("RGB", (w, h + 14), (0, 0, 0))
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text((2, h + 1), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def _run_parts(run_dir: Path):
    from tlkeras.core.loading import load_run_model
    from tlkeras.runs import read_labels

    model = load_run_model(run_dir)
    return model, read_labels(run_dir)


def explain_images(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], output_dir: str | os.PathLike | None = None, *,
                   class_name: str | None = None, layer: str | None = None, alpha: float = 0.45,
                   caption: bool = True) -> list[dict[str, Any]]:
    """Writes a Grad-CAM overlay PNG for every image (files or folders) of a trained run.

    Each overlay has the original image's size and is named ``<stem>_gradcam.png`` in
    ``output_dir`` (default ``<run_dir>/explanations``); with ``caption`` a strip under it says
    which class is explained and with what probability.

    Args:
        run_dir: a run directory written by ``tlkeras.train`` (or ``tlkeras.distill``).
        images: image files and/or folders.
        class_name: explain this class for every image (default: each image's prediction).
        layer: the feature-map layer (default: :func:`cam_layer`).

    Returns:
        One dict per image: ``image``, ``overlay``, ``class``, ``probability``, ``predicted``,
        ``predicted_probability``, ``layer``.

    Raises:
        TLKerasError: a bad run directory, unknown class, unreadable image, bad layer.

    Side effects: writes the PNGs (atomically) into ``output_dir``.
    """
    from PIL import Image, ImageOps

    from tlkeras.core.data import load_image
    from tlkeras.runs import atomic_path

    run_dir = Path(run_dir)
    files = collect_images(images)
    model, labels = _run_parts(run_dir)
    k = int(model.outputs[0].shape[-1])
    names = labels if len(labels) == k else [f"output_{i}" for i in range(k)]
    target = None
    if class_name is not None:
        if class_name not in names:
            raise TLKerasError(f"unknown class {class_name!r}; the run's classes are {', '.join(names)}")
        target = names.index(class_name)
    size = int(model.inputs[0].shape[1])
    pixels = []
    for f in files:
        try:
            pixels.append(load_image(f, size))
        except Exception as exc:  # noqa: BLE001 - PIL raises many types
            raise TLKerasError(f"cannot read image {f} ({type(exc).__name__})") from None
    layer_name = cam_layer(model, layer)
    heat, classes, probs = gradcam(model, np.stack(pixels), target, layer=layer_name)
    out_dir = Path(output_dir) if output_dir is not None else run_dir / "explanations"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for f, h, c, p in zip(files, heat, classes, probs):
        with Image.open(f) as img:
            original = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        blended = overlay(original, h, alpha)
        pred = int(np.argmax(p)) if k > 1 else 0
        if caption:
            blended = _caption(blended, f"{names[c]} {p[c]:.2f}" + ("" if pred == c else f" (pred {names[pred]})"))
        stem = f.stem
        while stem in used:  # two folders may hold files of the same name
            stem += "_"
        used.add(stem)
        target_path = out_dir / f"{stem}_gradcam.png"
        with atomic_path(target_path) as tmp:
            Image.fromarray(blended).save(tmp, format="PNG")
        results.append({"image": str(f), "overlay": str(target_path), "class": names[c], "probability": float(p[c]),
                        "predicted": names[pred], "predicted_probability": float(p[pred]), "layer": layer_name})
    return results


def mistakes_gallery(run_dir: str | os.PathLike, *, split: str = "test", top: int = 16, data_source: str | None = None,
                     output: str | os.PathLike | None = None, layer: str | None = None, alpha: float = 0.45) -> dict[str, Any]:
    """A gallery of the evaluation split's most confident mistakes, with Grad-CAM overlays.

    The run's model predicts the split (``test``, else ``val``); misclassified images are
    sorted by the probability of the wrong prediction, highest first, and the ``top`` ones are
    drawn in a grid, each with the heatmap of the predicted (wrong) class and a caption
    ``true -> predicted (probability)``.

    Args:
        run_dir: a run directory of a softmax classifier.
        split: ``test``, ``val`` or ``train``.
        top: how many mistakes to show.
        data_source: data with the run's classes (default: the run's own).
        output: the gallery PNG (default ``<run_dir>/mistakes.png``); a JSON list of the
            mistakes is written next to it (same name, ``.json``).

    Returns:
        ``{"gallery", "list", "split", "count", "errors", "shown": [{path, true, predicted,
        probability}, ...]}``; ``gallery`` is None when there are no mistakes.

    Raises:
        TLKerasError: a non-softmax run, data whose classes differ, ``top`` < 1.

    Side effects: writes the PNG and JSON (atomically).
    """
    from tlkeras.config import load_config
    from tlkeras.core.data import load_data
    from tlkeras.core.metrics import predict
    from tlkeras.core.plots import pyplot
    from tlkeras.runs import atomic_path, write_json

    if top < 1:
        raise TLKerasError(f"top must be >= 1, got {top}")
    if split not in ("train", "val", "test"):
        raise TLKerasError(f"split must be train, val or test, got {split!r}")
    run_dir = Path(run_dir)
    model, labels = _run_parts(run_dir)
    config = load_config(run_dir / "config.yaml")
    if not task_of(config.model).exclusive_classes:
        raise TLKerasError(f"the gallery of mistakes needs a softmax classifier; {run_dir} has a {config.model.head} head")
    if data_source is not None:
        config.data.source = data_source
    if config.data.source is None:
        raise TLKerasError(f"{run_dir} was trained on the embedded demo; pass --data with images of its classes")
    size = int(model.inputs[0].shape[1])
    bundle = load_data(config.data, size, "softmax", config.seed)
    if bundle.class_names != labels:
        raise TLKerasError(f"the data's classes {bundle.class_names} differ from the run's {labels}; pass --data with the run's classes")
    chosen = {"train": bundle.train, "val": bundle.val, "test": bundle.test}[split]
    if chosen is None or len(chosen) == 0:
        split, chosen = "val", bundle.val
    probs = predict(model, chosen.x)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != chosen.y)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:top]
    output = Path(output) if output is not None else run_dir / "mistakes.png"
    shown = [{"path": chosen.paths[i] if chosen.paths else f"#{i}", "index": int(i), "true": labels[chosen.y[i]],
              "predicted": labels[pred[i]], "probability": float(probs[i, pred[i]]),
              "true_probability": float(probs[i, chosen.y[i]])} for i in order]
    result = {"gallery": None, "list": str(output.with_suffix(".json")), "split": split, "count": int(len(chosen)),
              "errors": int(len(wrong)), "shown": shown}
    if len(order):
        heat, _, _ = gradcam(model, chosen.x[order], pred[order], layer=layer)
        plt = pyplot()
        cols = min(4, len(order))
        rows = int(np.ceil(len(order) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, i, h, item in zip(axes.ravel(), order, heat, shown):
            ax.imshow(overlay(chosen.x[i], h, alpha))
            ax.set_title(f"{item['true']} -> {item['predicted']} ({item['probability']:.2f})", fontsize=9)
        fig.suptitle(f"{run_dir.name}: most confident mistakes on {split} ({len(wrong)} of {len(chosen)} wrong)", fontsize=10)
        fig.tight_layout()
        with atomic_path(output) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        result["gallery"] = str(output)
    write_json(output.with_suffix(".json"), result)
    return result
