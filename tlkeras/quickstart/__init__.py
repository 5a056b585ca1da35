"""The real first run: ``python -m tlkeras.train`` with no arguments.

The package carries a small sample of real photos and a real ImageNet backbone
(:mod:`tlkeras.quickstart.sample`), and :func:`tlkeras.quickstart.run.run_quickstart` runs the whole
mission on them offline: two-phase transfer beside the same network trained from scratch, an int8
export verified on LiteRT (and in MediaPipe Tasks when installed), and the run's report.

This package composes stages (train, export) and techniques (Grad-CAM in the report), so it sits
above both in the layering (tests/test_layout.py).
"""
