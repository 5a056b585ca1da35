"""``python -m tlkeras.evaluate runs/<name>``: re-evaluate a saved run."""

from __future__ import annotations

import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m tlkeras.evaluate",
        description="Re-evaluate a run directory on its own data or on --data with the same classes; "
        "writes eval_metrics.json, eval_confusion_matrix.png and report.html into the run.",
    )
    parser.add_argument("run_dir", help="a run directory written by tlkeras.train")
    parser.add_argument("--data", help="image folder, CSV or tfds:<name> (default: the run's own data)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate (default: test)")
    parser.add_argument("--unknown", metavar="DIR", help="a folder of images of none of the run's classes: "
                        "measure their rejection (AUROC, false-accept rate at the run's unknown threshold)")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing into the run")
    args = parser.parse_args(argv)
    from tlkeras.core.tasks import task_of_run
    from tlkeras.evaluate.run import evaluate_split, write_evaluation

    task = task_of_run(args.run_dir)
    if task.owns_pipeline:  # detection, segmentation: the task evaluates, prints and writes its own
        task.evaluate_run(args.run_dir, data_source=args.data, split=args.split, write=not args.no_write, verbose=True)
        return 0

    evaluation = evaluate_split(args.run_dir, args.data, args.split, unknown=args.unknown)
    metrics, final = evaluation.metrics, evaluation.metrics["final"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in final.items() if isinstance(v, float))
    kind = "texts" if evaluation.model.inputs[0].dtype == "string" else "images"
    print(f"{metrics['split']} ({final.get('count', '?')} {kind}): {shown}")
    if "unknown" in metrics:
        u = metrics["unknown"]
        print(f"unknown ({u['unknown']} images): AUROC {u['auroc']:.3f}, false-accept rate {u['false_accept_rate']:.3f} "
              f"and known recall {u['known_recall']:.3f} at threshold {u['threshold']:.4f} (from {u['threshold_source']})")
    if not args.no_write:
        write_evaluation(args.run_dir, evaluation)
        print(f"report: {_write_report(args.run_dir, evaluation)}")
    return 0


def _write_report(run_dir, evaluation):
    """report.html of the evaluation, with Grad-CAM overlays of the mistakes (softmax runs)."""
    import functools

    from tlkeras.core.tasks import task_of_head
    from tlkeras.explain.gradcam import gradcam_overlays
    from tlkeras.report.html import Examples, write_run_report

    if not task_of_head(evaluation.head).exclusive_classes:
        return write_run_report(run_dir, metrics_file="eval_metrics.json")
    e = evaluation
    examples = Examples(e.split.x, e.split.y, e.outputs, e.split.paths, e.split_name)
    overlays = None if examples.is_text else functools.partial(gradcam_overlays, e.model)  # Grad-CAM explains images
    return write_run_report(run_dir, examples, overlays, metrics_file="eval_metrics.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.evaluate``; returns the exit code."""
    return cli.run("tlkeras.evaluate", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
