"""``python -m tlkeras.explain runs/<name> images...``: Grad-CAM overlays for a trained run.

Writes ``<stem>_gradcam.png`` per image (default into ``runs/<name>/explanations/``). With
``--mistakes`` it also (or only, without images) draws the evaluation split's most confident
mistakes with their heatmaps into ``runs/<name>/mistakes.png`` (+ ``mistakes.json``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.explain",
        description=(
            "Grad-CAM heatmaps of a trained run's predictions, saved as overlays on the input images; "
            "--mistakes draws a gallery of the evaluation split's most confident mistakes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run directory written by tlkeras.train (or tlkeras.distill)")
    parser.add_argument("images", nargs="*", help="image files or folders to explain")
    parser.add_argument("--output-dir", default=None, help="where the overlays go (default: <run_dir>/explanations)")
    parser.add_argument("--class", dest="class_name", default=None, help="explain this class for every image (default: the predicted class)")
    parser.add_argument("--layer", default=None, help="the feature-map layer (default: the last one with at least 4x4 positions)")
    parser.add_argument("--alpha", type=float, default=0.45, help="heatmap opacity")
    parser.add_argument("--no-caption", action="store_true", help="do not write the class and probability under each overlay")
    group = parser.add_argument_group("gallery of mistakes")
    group.add_argument("--mistakes", action="store_true", help="write <run_dir>/mistakes.png: the most confident mistakes with heatmaps")
    group.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split the gallery evaluates (test falls back to val)")
    group.add_argument("--top", type=int, default=16, help="mistakes in the gallery")
    group.add_argument("--data", default=None, help="data with the run's classes (default: the run's own)")
    group.add_argument("--gallery", default=None, help="gallery PNG path (default: <run_dir>/mistakes.png)")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.errors import TLKerasError

    if not args.images and not args.mistakes:
        raise TLKerasError("nothing to explain; pass image files or folders, and/or --mistakes")
    from tlkeras.explain.gradcam import explain_images, mistakes_gallery

    if args.images:
        results = explain_images(args.run_dir, args.images, args.output_dir, class_name=args.class_name, layer=args.layer,
                                 alpha=args.alpha, caption=not args.no_caption)
        for r in results:
            note = "" if r["predicted"] == r["class"] else f" (predicted {r['predicted']} {r['predicted_probability']:.2f})"
            print(f"{r['image']}: {r['class']} {r['probability']:.2f}{note} -> {r['overlay']}")
        print(f"{len(results)} overlay(s), Grad-CAM layer {results[0]['layer']}")
    if args.mistakes:
        g = mistakes_gallery(args.run_dir, split=args.split, top=args.top, data_source=args.data, output=args.gallery, layer=args.layer, alpha=args.alpha)
        if g["gallery"] is None:
            print(f"no mistakes on {g['split']} ({g['count']} images); wrote {g['list']}")
        else:
            print(f"{g['errors']} of {g['count']} {g['split']} images wrong; the {len(g['shown'])} most confident -> {g['gallery']}")
            for item in g["shown"][:5]:
                print(f"  {item['path']}: {item['true']} -> {item['predicted']} ({item['probability']:.2f})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.explain``; returns the exit code."""
    return cli.run("tlkeras.explain", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
