"""Semantic segmentation: data (images/ + masks/), an encoder-decoder model, two-phase training,
mIoU metrics and a MediaPipe ImageSegmenter bundle. The task is :class:`task.Segmentation`,
registered as ``segmentation`` in :mod:`tlkeras.core.tasks`. Importing this package imports no
TensorFlow.
"""
