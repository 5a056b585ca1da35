"""Stage 3 technique: knowledge distillation from a trained teacher run (``python -m tlkeras.distill``)."""
