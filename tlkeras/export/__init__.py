"""Stage 2: exporting a trained model to verified TFLite bundles (``python -m tlkeras.export``)."""
