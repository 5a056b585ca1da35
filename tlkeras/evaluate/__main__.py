"""``python -m tlkeras.evaluate runs/<name>``: re-evaluate a saved run."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tlkeras.evaluate",
        description="Re-evaluate a run directory on its own data or on --data with the same classes; "
        "writes eval_metrics.json and eval_confusion_matrix.png into the run.",
    )
    parser.add_argument("run_dir", help="a run directory written by tlkeras.train")
    parser.add_argument("--data", help="image folder, CSV or tfds:<name> (default: the run's own data)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate (default: test)")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing into the run")
    args = parser.parse_args(argv)
    from tlkeras.evaluate.run import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data, args.split, write=not args.no_write)
    final = metrics["final"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in final.items() if isinstance(v, float))
    print(f"{metrics['split']} ({final.get('count', '?')} images): {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.evaluate``; returns the exit code."""
    return cli.run("tlkeras.evaluate", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
