"""``python -m tlkeras.export runs/<name>``: a verified TFLite bundle in ``export/<name>/``.

Exit codes: 0 exported and verified; 2 bad input (one line on stderr); 3 the bundle was written
but a variant lost more than ``--max-drop`` points (or did not run on LiteRT) and
``--allow-drop`` was not given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tlkeras import cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from tlkeras.export.bundle import ExportOptions

    parser = cli.ArgumentParser(
        prog="python -m tlkeras.export",
        description=(
            "Convert a trained run to TFLite variants, run each with LiteRT on the test split, and write "
            "a bundle (one .tflite per variant, labels.txt, metadata.json, model_card.md, micro/ C array). "
            "Exits 3 when a variant drops more than --max-drop points, unless --allow-drop."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", nargs="?", help="a run directory written by tlkeras.train")
    parser.add_argument("--serve", metavar="BUNDLE", default=None,
                        help="serve an exported bundle with a web/ page (--web) on http://127.0.0.1:PORT/web/ until Ctrl-C, instead of exporting")
    parser.add_argument("--port", type=int, default=8000, help="the port for --serve (0 picks a free one)")
    parser.add_argument("--output-dir", default=None, help="bundle directory (default: export/<run name>)")
    parser.add_argument("--data", default=None, help="image folder, CSV or tfds:<name> with the run's classes (default: the run's own data)")
    # Every ExportOptions field is a flag (variants as --quantize: comma-separated names or all).
    cli.add_option_flags(parser, ExportOptions, title="export options", names={"variants": "quantize"})
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def _table(result) -> str:
    meta = result.metadata
    key = meta["evaluation"]["primary_metric"]
    lines = [f"| variant | KB | {key} | agreement | drop (points) | status |", "|---|---|---|---|---|---|"]
    for name, v in meta["variants"].items():
        m = v.get("metrics") or {}
        agreement = m.get("agreement")
        status = "ok" if v.get("within_threshold") else ("error" if v.get("error") else "OVER")
        lines.append(
            f"| {name} | {(v.get('bytes') or 0) / 1024:.0f} | {m.get(key, float('nan')):.3f} | "
            f"{'—' if agreement is None else f'{agreement:.3f}'} | {m.get('drop_points', float('nan')):.2f} | {status} |"
        )
    keras_value = meta["evaluation"]["keras"].get(key)
    kind = "texts" if meta.get("modality") == "text" else "images"
    lines.append(f"Keras {key} on {meta['evaluation']['split']} ({meta['evaluation']['count']} {kind}): {keras_value:.3f}")
    if meta.get("micro"):
        micro = meta["micro"]
        lines.append(f"micro: {'builtin int8 only' if micro['ok'] else 'NOT micro-ready: ' + micro['problems'][0]}; "
                     f"tensor arena {'measured on TFLite Micro' if micro['arena'].get('measured_tflm') else 'estimate'} {micro['arena_bytes']} bytes"
                     + (f" (not measured: {micro['arena']['not_measured']})" if micro["ok"] and micro["arena"].get("not_measured") else ""))
    return "\n".join(lines)


def _serve(bundle: str, port: int) -> int:
    from pathlib import Path

    from tlkeras.core.browser import serve_forever
    from tlkeras.errors import TLKerasError

    if not (Path(bundle) / "web" / "index.html").is_file():
        what = ("has no web/index.html" if Path(bundle).is_dir() else "is a file, not a bundle folder" if Path(bundle).exists()
                else "does not exist")
        raise TLKerasError(f"{bundle} {what}; pass a bundle exported with --web (python -m tlkeras.export runs/<name> --web)")
    if not 0 <= port <= 65535:
        raise TLKerasError(f"--port must be in 0..65535, got {port}; pass a free port, or 0 to pick one")
    serve_forever(bundle, port, on_ready=lambda url: print(f"serving {bundle}: open {url}/web/ (Ctrl-C stops)", flush=True))
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve is not None:
        return _serve(args.serve, args.port)
    if args.run_dir is None:
        from tlkeras.errors import TLKerasError

        raise TLKerasError("pass a run directory to export (python -m tlkeras.export runs/<name>), or --serve <bundle>")
    from tlkeras.export.bundle import ExportCheckError, ExportOptions, export_run

    options = cli.options_from_args(args, ExportOptions, names={"variants": "quantize"})
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        result = export_run(args.run_dir, args.output_dir, options, data_source=args.data, progress=progress)
    except ExportCheckError as exc:
        print(_table(exc.result))
        raise
    print(_table(result))
    print(f"bundle: {result.bundle_dir}")
    from tlkeras.report.html import write_bundle_report

    print(f"report: {write_bundle_report(result.bundle_dir)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.export``; returns the exit code."""
    return cli.run("tlkeras.export", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
