"""The shared core every stage builds on: data, augmentation, backbones, models, metrics, plots, loading, LiteRT.

Nothing here imports a stage above it (train, export, techniques, tune). Import the modules directly
(``from tlkeras.core.data import load_data``); this package's own import is free of TensorFlow.
"""
