"""Stage 3 technique: pruning, clustering and quantization-aware training with tfmot (``python -m tlkeras.optimize``)."""
