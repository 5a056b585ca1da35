"""Object detection: readers (Pascal VOC, CSV, COCO JSON, YOLO), anchors and box coder, an SSD-style
model on the registry's MobileNet backbones, training, COCO metrics and a MediaPipe ObjectDetector
export. The task (:class:`tlkeras.core.detection.task.Detection`) is registered as ``detection``.

Importing this package does not import TensorFlow.
"""
