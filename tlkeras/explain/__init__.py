"""Stage 3 technique: Grad-CAM explanations of a run's predictions (``python -m tlkeras.explain``)."""
