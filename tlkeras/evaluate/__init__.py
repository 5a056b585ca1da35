"""Stage 2: re-evaluating a saved run (``python -m tlkeras.evaluate``)."""
