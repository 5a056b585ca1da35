"""The model card (``model_card.md``) of a bundle, written from its metadata."""

from __future__ import annotations

from typing import Any

import numpy as np


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def model_card(meta: dict[str, Any]) -> str:
    """The Markdown model card of a bundle, from its metadata.json content (image or text; a task
    with its own card, such as detection, writes it through ``Task.model_card``)."""
    from tlkeras.core.tasks import task_names

    name = (meta.get("task") or {}).get("name")
    if name in task_names():
        from tlkeras.core.tasks import get_task

        if hasattr(get_task(name), "model_card"):
            return get_task(name).model_card(meta)
    ev = meta["evaluation"]
    key = ev["primary_metric"]
    source = meta.get("source_run") or {}
    rows = []
    for name, v in meta["variants"].items():
        m = v.get("metrics") or {}
        status = "ok" if v.get("within_threshold") else ("FAILED: " + v["error"] if v.get("error") else "over threshold")
        rows.append(
            f"| {name} | {(v.get('bytes') or 0) / 1024:.0f} KB | {v['input']['dtype'] if v.get('input') else '—'} | "
            f"{_fmt(m.get(key))} | {_fmt(m.get('f1_macro'))} | {_fmt(m.get('agreement'))} | {_fmt(m.get('drop_points'), 2)} | {status} |"
        )
    classes = ", ".join(meta["task"]["class_names"])
    micro = meta.get("micro")
    micro_text = ""
    runtime_lines = []
    examples = "texts" if meta.get("modality") == "text" else "images"
    for name, v in meta["variants"].items():
        mp = v.get("mediapipe") or {}
        note = ""
        if mp and not mp.get("loaded"):
            note = f"; MediaPipe Tasks does not load it: {mp.get('error')}"
        elif mp:
            note = f"; MediaPipe Tasks agrees with LiteRT on {mp['agreement']:.3f} of {examples}"
        guard = v.get("guardrail")
        if guard and guard.get("passed"):
            lat = guard.get("latency") or {}
            note += (f"; int8 guardrail kept {', '.join(guard['float_layers'])} in float "
                     f"(+{guard['size_cost_bytes'] / 1024:.1f} KB, p50 latency x{lat.get('ratio', float('nan')):.2f})")
        elif guard:
            note += f"; int8 guardrail could not rescue it: {guard.get('reason')}"
        runtime_lines.append(f"- `{name}`: verified on {', '.join(v.get('verified_on') or ['none'])}{note}.")
    threshold = meta.get("unknown_threshold")
    runtime_text = ("\n## Runtimes\n\n" + "\n".join(runtime_lines) + "\n"
                    + (f"\nDefault score threshold (from the run's calibration): {threshold:.3f}; below it, answer \"unknown\".\n"
                       if threshold is not None else ""))
    if micro:
        micro_text = (
            f"\n## Microcontrollers\n\n`{', '.join(micro['files'])}`: the int8 model as a C array. "
            f"Builtin int8 only: {'yes' if micro['ok'] else 'no — ' + '; '.join(micro['problems'][:3])}. "
            f"Ops: {', '.join(micro['ops'])}. Tensor arena estimate: {micro['arena_bytes']} bytes.\n"
        )
    web = meta.get("web") or {}
    if web.get("page"):
        checks = web.get("checks") or {}
        shown = "; ".join(f"{k}: {c['agreement']:.3f} top-1 agreement with LiteRT, p50 {c['p50_ms']:.1f} ms" if c.get("loaded")
                          else f"{k}: not loaded ({c.get('error')})" for k, c in checks.items())
        micro_text += (
            f"\n## In a browser\n\n`{web['page']}` classifies with {web['mediapipe_web']['package']} {web['mediapipe_web']['version']} "
            f"(WebAssembly, nothing leaves the page). Try it: `python -m tlkeras.export --serve <this folder>`, then open "
            f"http://127.0.0.1:8000/web/. "
            + (f"Checked in headless Chromium: {shown}.\n" if checks else f"Not checked in a browser: {web.get('not_verified')}.\n")
        )
    trainable = meta.get("trainable")
    if trainable:
        lat = trainable.get("latency") or {}
        micro_text += (
            f"\n## On-device training\n\n`trainable.tflite` ({trainable['bytes'] / 1024:.0f} KB"
            + (f", {trainable['size_vs_float32']:.2f}x the float32 variant" if trainable.get("size_vs_float32") else "")
            + f"): signatures infer, embed, train, get_weights, set_weights (builtin ops only); {trainable['slots']} class slots, "
            f"{trainable['free_slots']} free for an app's own classes; SGD with momentum {trainable['optimizer']['momentum']}, L2 "
            f"{trainable['optimizer']['l2']}. On this machine's LiteRT (1 thread): embed {lat.get('embed_ms', float('nan')):.2f} ms per image, "
            f"one train step on 32 features {lat.get('train_32_ms', float('nan')):.2f} ms. Verified: infer agrees with Keras on "
            f"{_fmt(trainable.get('infer_agreement_with_keras'))} of the images; a train step equals its NumPy simulation within "
            f"{trainable.get('train_step_max_error_vs_numpy', float('nan')):.1e}.\n"
        )
    keras_metric = ev["keras"].get(key)
    text = meta.get("modality") == "text"
    examples = "texts" if text else "images"
    inp = meta["input"]
    input_line = (f"{inp.get('dtype')} token ids, sequence length {inp.get('sequence_length')} (tokenizer: {(inp.get('tokenizer') or {}).get('type')}, "
                  f"vocabulary in vocab.txt and in the TFLite metadata)" if text
                  else f"{inp.get('shape')} RGB pixels 0..255 ({inp.get('preprocessing')})")
    return f"""# Model card: {meta['name']}

{'Text' if text else 'Image'} classifier exported by tlkeras {meta['versions']['tlkeras']} on {meta['created'][:10]}.

## Task and model

- Head: {meta['task']['head']} over {len(meta['task']['class_names'])} classes: {classes}.
- Backbone: {source.get('backbone', 'unknown')}{f" (alpha {source['alpha']})" if source.get('alpha') else ''}, weights: {source.get('weights', 'unknown')}.
- Source run: `{source.get('path', 'n/a')}`; training data: `{source.get('data', 'n/a')}`.
- Input: {input_line}.
- Output: {meta['outputs'][0]['meaning']}.

## Verification

Every variant was run with the LiteRT interpreter on the {ev['split']} split ({ev['count']} {examples} of
`{ev['data']}`) and compared with the Keras model ({key} {_fmt(keras_metric)}). The export fails when a
variant drops more than {ev['max_drop_points']} points of {key}.

| variant | size | input | {key} | macro F1 | top-1 agreement | drop (points) | status |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{runtime_text}{micro_text}
## Intended use and limits

Use on {examples} like the training data (same classes, similar sources). The
{ev['split']} split is small ({ev['count']} {examples}), so accuracy has a standard error of about
{100 * np.sqrt(max(keras_metric or 0.5, 1e-3) * (1 - min(keras_metric or 0.5, 1 - 1e-3)) / max(ev['count'], 1)):.1f} points;
one example is {100 / max(ev['count'], 1):.1f} points. Inputs of other classes still get one of
these labels: set a confidence threshold in the app if that matters.
"""
