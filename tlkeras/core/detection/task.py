"""The ``detection`` task: boxes and classes, trained, scored and exported by its own pipeline.

Importing this module does not import TensorFlow; each method imports what it needs.
"""

from __future__ import annotations

from tlkeras.core.tasks.base import Task

__all__ = ["Detection"]


class Detection(Task):
    """Object detection (Pascal VOC, CSV, COCO JSON, YOLO data; MediaPipe ObjectDetector export)."""

    name = "detection"
    primary_metric = "AP50"
    higher_is_better = True
    owns_pipeline = True
    techniques = frozenset()

    def recognises(self, source: str) -> bool:
        """True for a Pascal VOC folder, a COCO JSON folder, a YOLO ``data.yaml`` layout or a detection CSV."""
        try:
            from tlkeras.core.detection.data import layout_of

            return layout_of(source) is not None
        except Exception:  # noqa: BLE001 - asked about arbitrary paths: never raises
            return False

    def train(self, config, data=None, *, write=True, callbacks=None, resume=False, report_writer=None):
        """See :func:`tlkeras.core.detection.run.train_detector`."""
        from tlkeras.core.detection.run import train_detector

        return train_detector(self, config, data, write=write, callbacks=callbacks, resume=resume, report_writer=report_writer)

    def evaluate_run(self, run_dir, data_source=None, split="test", write=True, verbose=False):
        """See :func:`tlkeras.core.detection.run.evaluate_run`."""
        from tlkeras.core.detection.run import evaluate_run

        return evaluate_run(self, run_dir, data_source=data_source, split=split, write=write, verbose=verbose)

    def export_run(self, run_dir, target, options=None, data_source=None, progress=None):
        """See :func:`tlkeras.core.detection.export.export_run`."""
        from tlkeras.core.detection.export import export_run

        return export_run(self, run_dir, target, options=options, data_source=data_source, progress=progress)

    def bundle_metrics(self, variant: dict) -> dict:
        """The columns ``python -m tlkeras.benchmark`` adds for one variant of a detection bundle
        (its ``metadata.json`` entry): AP50 and AP (COCO's mAP@[.5:.95]) as LiteRT decoded the file
        and as MediaPipe's ObjectDetector saw the original images (None when not measured)."""
        metrics, mediapipe = variant.get("metrics") or {}, variant.get("mediapipe") or {}
        return {"AP50": metrics.get("AP50"), "AP": metrics.get("AP"),
                "MediaPipe AP50": mediapipe.get("AP50"), "MediaPipe AP": mediapipe.get("AP")}

    def model_card(self, meta: dict) -> str:
        """See :func:`tlkeras.core.detection.card.detection_card` (``metadata.json`` content in, Markdown out)."""
        from tlkeras.core.detection.card import detection_card

        return detection_card(meta)
