"""``python -m tlkeras.benchmark export/<name>``: size, latency and accuracy of a bundle's variants.

Prints a Markdown table and writes ``benchmark.md``, ``benchmark.json`` and
``size_vs_accuracy.png`` into the bundle (or ``--output-dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from tlkeras.benchmark.bundle import BenchmarkOptions

    parser = cli.ArgumentParser(
        prog="python -m tlkeras.benchmark",
        description="Time every variant of an exported bundle on LiteRT (XNNPACK) with 1 and N threads; "
        "report file size, gzipped size, latency p50/p90, accuracy and agreement with Keras.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bundle", help="a bundle directory written by tlkeras.export, e.g. export/<name>")
    cli.add_option_flags(parser, BenchmarkOptions, title="timing options")
    parser.add_argument("--output-dir", default=None, help="where to write benchmark.md/.json/.png (default: the bundle)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle, format_markdown, write_benchmark

    options = cli.options_from_args(args, BenchmarkOptions)
    result = benchmark_bundle(args.bundle, options)
    print(format_markdown(result))
    if not args.no_write:
        paths = write_benchmark(result, args.output_dir or args.bundle)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        from tlkeras.report.html import write_bundle_report

        # The bundle's page, with this benchmark's latency columns and plot.
        print(f"report: {write_bundle_report(args.bundle, benchmark=result, path=Path(args.output_dir or args.bundle) / 'report.html')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.benchmark``; returns the exit code."""
    return cli.run("tlkeras.benchmark", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
