"""Browser benchmark (issue 26): the flowers5 MobileNetV2 bundle in MediaPipe Tasks for Web, headless Chromium.

Trains the default recipe on ``../shared/data/flowers5`` with the MobileNetV2-1.0 ImageNet weights
(once; reused from --work), exports every variant with ``--web`` and reads what the export measured
in the browser: per variant, whether MediaPipe Web loads it, its top-1 agreement with LiteRT on the
150 test photos, the p50 classification time per photo in the page (WebAssembly, CPU, XNNPACK), and
the page weight (web/ plus the variant's file). LiteRT's p50 (1 thread, Python) is shown beside it.

    python tools/bench_web.py [--shared ../shared] [--work /tmp/tlkeras-bench-web] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/tlkeras-bench-web")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shared, work = Path(args.shared), Path(args.work)
    run = work / "runs" / f"flowers5-seed{args.seed}"
    if not (run / "model.keras").is_file():
        subprocess.run([sys.executable, "-m", "tlkeras.train", "--data", str(shared / "data" / "flowers5"), "--backbone", "mobilenet_v2",
                        "--weights", str(shared / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"), "--seed", str(args.seed),
                        "--verbose", "0", "--output-dir", str(work / "runs"), "--name", run.name], check=True, cwd=work if work.is_dir() else None)
    bundle = work / "bundles" / run.name
    subprocess.run([sys.executable, "-m", "tlkeras.export", str(run), "--output-dir", str(bundle), "--overwrite", "--quantize", "all",
                    "--no-micro", "--web", "--allow-drop", "--quiet"], check=True)
    from tlkeras.core.litert import measure_latency

    meta = json.loads((bundle / "metadata.json").read_text())
    web = meta["web"]
    page = web["page_bytes"]
    lines = [f"MediaPipe Tasks for Web {web['mediapipe_web']['version']}; page (web/) {page / 1e6:.2f} MB",
             "| variant | loads in MediaPipe Web | agreement with LiteRT (150 photos) | p50 ms/photo in Chromium | LiteRT p50 ms (1 thread) | "
             "page weight MB (web/ + model) | verified_on |",
             "|---|---|---|---|---|---|---|"]
    for name, check in web["checks"].items():
        variant = meta["variants"][name]
        litert_ms = measure_latency(bundle / variant["file"], num_threads=1, iterations=50)["p50_ms"]
        loads = "yes" if check["loaded"] else f"no: {check['error'][:90]}"
        agreement = "" if check["agreement"] is None else f"{check['agreement']:.3f}"
        p50 = "" if check["p50_ms"] is None else f"{check['p50_ms']:.1f}"
        lines.append(f"| {name} | {loads} | {agreement} | {p50} | {litert_ms:.1f} | {(page + variant['bytes']) / 1e6:.2f} | "
                     f"{', '.join(variant['verified_on'])} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
