"""``python -m tlkeras.distill runs/<teacher> --image-size 128``: a smaller student from a teacher.

The student starts from the teacher's ``config.yaml`` (data, recipe, seed); every
``tlkeras.train`` flag overrides it (``--image-size``, ``--alpha``, ``--backbone``, ``--weights``,
``--phase1-epochs``, ...). The student is written as an ordinary run directory
(default ``<output-dir>/<teacher>-student-<size>px``), ready for ``python -m tlkeras.export``.

A text teacher (word model, ``hf:`` BERT) distils into the word model: ``--student word_embedding``
(the same as ``--backbone``), ``--unlabelled texts.txt`` optional (tlkeras/distill/text.py); the run is
``<output-dir>/<teacher>-student-word_embedding``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.distill",
        description=(
            "Train a smaller student (lower --image-size and/or --alpha) from a trained teacher run with "
            "temperature-scaled soft targets plus the hard labels; writes a normal run directory."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("teacher", help="the teacher's run directory (softmax classifier)")
    from tlkeras.distill.distillation import DistillOptions

    cli.add_option_flags(parser, DistillOptions, title="distillation options", dest_prefix="opt.")
    cli.add_config_flags(parser)
    parser.add_argument("--quiet", dest="train.verbose", action="store_const", const=0, default=argparse.SUPPRESS,
                        help="no per-epoch progress (the same as --verbose 0); the result lines still print")
    # The spelling: --student word_embedding is --backbone word_embedding.
    parser.add_argument("--student", dest="model.backbone", default=argparse.SUPPRESS, help="the same as --backbone (e.g. word_embedding "
                        "for a text teacher)")
    parser.set_defaults(config=None)
    return parser


def _recipe_for_student(config, teacher: Path, explicit: set) -> None:
    """A text student on another encoder than its teacher's trains with its own encoder's recipe: the
    model and training fields of the teacher's config.yaml (e.g. BERT's 2 epochs at 6e-5 with AdamW)
    go back to their defaults, unless given on the command line; the data and the seed stay the
    teacher's. Side effect: changes ``config`` in place."""
    import dataclasses

    from tlkeras.config import ModelConfig, TrainConfig, load_config

    if load_config(teacher / "config.yaml").model.backbone == config.model.backbone:
        return
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        fresh = cls()
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" not in explicit and f.name not in ("backbone", "head", "task", "verbose"):
                setattr(getattr(config, section), f.name, getattr(fresh, f.name))
    # The batch size is a recipe field of the encoder's family (unset: its default).
    if "data.batch_size" not in explicit:
        config.data.batch_size = None


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.distill.distillation import DistillOptions, distill
    from tlkeras.errors import RunDirectoryError

    options = cli.options_from_args(args, DistillOptions, dest_prefix="opt.")
    teacher = Path(args.teacher)
    if not (teacher / "config.yaml").is_file() or not (teacher / "model.keras").is_file():
        what = "does not exist" if not teacher.exists() else "is not a run directory (config.yaml and model.keras)"
        raise RunDirectoryError(f"teacher {teacher} {what}; pass a run directory written by tlkeras.train")
    explicit = set(vars(args))
    if not args.config:
        args.config = str(teacher / "config.yaml")
    config = cli.config_from_args(args)
    text = config.data.modality == "text"
    if text:
        _recipe_for_student(config, teacher, explicit)
    if "name" not in explicit and text:
        config.name = f"{teacher.resolve().name}-student-{config.model.backbone}"
    elif "name" not in explicit:
        size = config.data.image_size or "default"
        width = f"-a{config.model.alpha:g}" if "model.alpha" in explicit and config.model.alpha else ""
        config.name = f"{teacher.resolve().name}-student-{size}px{width}"
    result = distill(teacher, config, options)
    m = result.metrics
    d = m["distillation"]
    if d.get("modality") == "text":
        print(f"teacher {d['teacher_backbone']}: {m['final_split']} accuracy {d['teacher_final']['accuracy']:.3f} ({d['teacher_params']:,} parameters)")
        print(f"student {d['student_backbone']}: {m['final_split']} accuracy {m['final']['accuracy']:.3f} | val {m['val']['accuracy']:.3f} "
              f"({d['student_params']:,} parameters); agrees with the teacher on {d['train_agreement']:.1%} of the training texts")
        if result.run_dir is not None:
            print(f"run directory: {result.run_dir}")
        return 0
    print(f"teacher {d['teacher_image_size']}px: {m['final_split']} accuracy {d['teacher_final']['accuracy']:.3f} "
          f"({d['teacher_params']:,} parameters)")
    print(f"student {d['student_image_size']}px: {m['final_split']} accuracy {m['final']['accuracy']:.3f} | "
          f"val {m['val']['accuracy']:.3f} ({d['student_params']:,} parameters)")
    t = result.timings
    print(f"phase 1 {t['phase1']:.1f}s | phase 2 {t['phase2']:.1f}s | total {t['total']:.1f}s")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.distill``; returns the exit code."""
    return cli.run("tlkeras.distill", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
