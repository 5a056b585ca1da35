"""The kinds of ``.tflite`` file a bundle can hold (:data:`VARIANTS`) and how users name them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from tlkeras.errors import TLKerasError


@dataclass(frozen=True)
class Variant:
    """One kind of ``.tflite`` file a bundle can hold.

    Attributes:
        name: file stem and key in metadata.json.
        description: one line for the model card and README.
        optimize: apply ``tf.lite.Optimize.DEFAULT`` (weight quantization).
        float16: quantize weights to float16.
        ops: ``float`` (TFLite builtins), ``int8`` (builtins, int8 only) or ``int16x8``.
        io: input/output dtype: ``float32``, ``int8`` or ``uint8``.
        tolerance: the largest output difference from Keras (probabilities) this kind of
            conversion is expected to produce on a trained model; used by the tests.
    """

    name: str
    description: str
    optimize: bool = False
    float16: bool = False
    ops: str = "float"
    io: str = "float32"
    tolerance: float = 1e-4

    @property
    def needs_data(self) -> bool:
        """Whether conversion calibrates activations on a representative dataset."""
        return self.ops in ("int8", "int16x8")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("float32", "float32 weights and activations; the reference conversion"),
        Variant("dynamic_range", "int8 weights, float activations (dynamic-range quantization)", optimize=True, tolerance=0.15),
        Variant("float16", "float16 weights, float32 compute (GPU delegates run it in float16)", optimize=True, float16=True, tolerance=0.02),
        Variant("int8_float_io", "full-integer int8 ops with float32 input/output (CPU, XNNPACK)", optimize=True, ops="int8", tolerance=0.25),
        Variant("int8", "full-integer int8 with int8 input/output (microcontrollers, Edge TPU)", optimize=True, ops="int8", io="int8", tolerance=0.25),
        Variant("uint8_io", "full-integer int8 ops with uint8 input/output (raw uint8 pixels in)", optimize=True, ops="int8", io="uint8", tolerance=0.25),
        Variant("int16x8", "int16 activations, int8 weights (more precise than int8; slower on CPU)", optimize=True, ops="int16x8", tolerance=0.2),
    )
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)

_ALIASES = {"fp32": "float32", "float": "float32", "dynamic": "dynamic_range", "drq": "dynamic_range",
            "fp16": "float16", "int8_float": "int8_float_io", "full_int8": "int8", "uint8": "uint8_io",
            "16x8": "int16x8", "int16": "int16x8"}


def parse_variants(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turns ``"all"``, ``"float32,int8"`` or a list of names (``-`` or ``_``) into variant names.

    Raises:
        TLKerasError: on an unknown name (listing the known ones) or an empty list.
    """
    if spec is None:
        return DEFAULT_VARIANTS
    items = re.split(r"[,\s]+", spec) if isinstance(spec, str) else [p for s in spec for p in re.split(r"[,\s]+", s)]
    names: list[str] = []
    for raw in items:
        key = raw.strip().lower().replace("-", "_")
        if not key:
            continue
        if key == "all":
            names.extend(DEFAULT_VARIANTS)
            continue
        key = _ALIASES.get(key, key)
        if key not in VARIANTS:
            raise TLKerasError(f"unknown variant {raw!r}; choose from all, {', '.join(VARIANTS)}")
        names.append(key)
    names = list(dict.fromkeys(names))
    if not names:
        raise TLKerasError(f"no variant given; pass --quantize all or some of {', '.join(VARIANTS)}")
    return tuple(n for n in VARIANTS if n in names)  # canonical order
