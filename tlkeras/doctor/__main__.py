"""``python -m tlkeras.doctor``: report the environment and what to do about each problem.

Exit code 0 when nothing failed (warnings allowed), 1 when a check failed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Sequence

from tlkeras import cli

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="python -m tlkeras.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs", help="where runs will be written (checked for space and permissions)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    from tlkeras.doctor.checks import run_checks

    checks = run_checks(args.output_dir)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"[{c.status:>4}] {c.name:<{width}}  {c.found}")
            if c.fix:
                print(f"       {'':<{width}}  -> {c.fix}")
    return 1 if any(c.status == "fail" for c in checks) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tlkeras.doctor``; returns the exit code."""
    return cli.run("tlkeras.doctor", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
