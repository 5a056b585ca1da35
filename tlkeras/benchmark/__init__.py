"""Stage 2: measuring an exported bundle: size, latency, accuracy, agreement (``python -m tlkeras.benchmark``)."""
