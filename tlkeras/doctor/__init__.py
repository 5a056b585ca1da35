"""Checks of the environment: versions, the Keras world, GPUs, caches (``python -m tlkeras.doctor``)."""
