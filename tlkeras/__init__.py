"""tlkeras: transfer learning for Keras/TensorFlow with verified edge export.

The package is laid out by stage, so the folder list reads as the data flow::

    errors, config, runs, cli, _backend    the base: settings, run folders, the CLI layer, the one
                                           module that imports TensorFlow
    core/       data, augment, backbones, models, metrics, plots, loading, litert, versions
    train/      the training engine (phase runner, two-phase recipe), the demo, the train CLI
    evaluate/   export/   benchmark/      what a trained run goes through next
    optimize/   adapt/   distill/   explain/   heads/     techniques that extend the engine
    tune/       hyperparameter search over all of the above
    doctor/     environment checks

The public API below is a set of verbs and the config dataclasses, loaded on first use
(``tlkeras.train_model`` imports TensorFlow then), so the command-line tools start, parse flags and
set up logging before TensorFlow loads. Stage packages are named after the stage (``tlkeras.train``
is the package); the verbs carry an object (``train_model``, ``export_run``, ``distill_model``) so no
package shadows them: ``tlkeras.distill`` is the distillation package (``python -m tlkeras.distill``)
and its verb is ``tlkeras.distill_model`` (``tlkeras.distill.distillation.distill``). An
``import tlkeras.<stage>`` binds the package on ``tlkeras``, so a verb with a package's name would
change meaning with import order; ``tests/test_docs_map.py`` checks that none does.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

# name -> "module" (the attribute of the same name) or "module:attribute".
_EXPORTS = {
    # base
    "DataConfig": "tlkeras.config",
    "ModelConfig": "tlkeras.config",
    "RunConfig": "tlkeras.config",
    "TrainConfig": "tlkeras.config",
    "load_config": "tlkeras.config",
    "save_config": "tlkeras.config",
    "TLKerasError": "tlkeras.errors",
    # core
    "BackboneSpec": "tlkeras.core.backbones",
    "get_backbone": "tlkeras.core.backbones",
    "list_backbones": "tlkeras.core.backbones",
    "register_backbone": "tlkeras.core.backbones",
    "build_model": "tlkeras.core.models",
    "freeze_backbone": "tlkeras.core.models",
    "unfreeze_backbone": "tlkeras.core.models",
    "DataBundle": "tlkeras.core.data",
    "load_data": "tlkeras.core.data",
    "from_arrays": "tlkeras.core.data",
    "from_texts": "tlkeras.core.text.data",
    "build_text_classifier": "tlkeras.core.models",
    "compute_metrics": "tlkeras.core.metrics",
    "predict": "tlkeras.core.metrics",
    "load_run_model": "tlkeras.core.loading",
    "load_model": "tlkeras.core.loading",
    "calibrate_model": "tlkeras.core.calibration",
    # stages: one verb each
    "train_model": "tlkeras.train.run",
    "fit_two_phase": "tlkeras.train.recipe",
    "TrainResult": "tlkeras.train.run",
    "find_learning_rate": "tlkeras.train.lr_finder",
    "evaluate_run": "tlkeras.evaluate.run",
    "ExportOptions": "tlkeras.export.bundle",
    "export_run": "tlkeras.export.bundle",
    "export_model": "tlkeras.export.bundle",
    "BenchmarkOptions": "tlkeras.benchmark.bundle",
    "benchmark_bundle": "tlkeras.benchmark.bundle",
    "write_run_report": "tlkeras.report.html",
    "write_bundle_report": "tlkeras.report.html",
    # techniques
    "PruningOptions": "tlkeras.optimize.options",
    "ClusteringOptions": "tlkeras.optimize.options",
    "QATOptions": "tlkeras.optimize.options",
    "FineTuneOptions": "tlkeras.optimize.options",
    "optimize_run": "tlkeras.optimize.pipeline",
    "train_with_unlabeled": "tlkeras.adapt.run",
    "DistillOptions": "tlkeras.distill.distillation",
    "distill_model": "tlkeras.distill.distillation:distill",
    "audit_data": "tlkeras.audit.run",
    "explain_images": "tlkeras.explain.gradcam",
    "gradcam": "tlkeras.explain.gradcam",
    "FewShotClassifier": "tlkeras.heads.fewshot",
    "TaskSpec": "tlkeras.heads.multitask_data",
    "train_multitask": "tlkeras.heads.multitask",
    # search
    "SearchOptions": "tlkeras.tune.search",
    "SearchSpace": "tlkeras.tune.space",
    "run_search": "tlkeras.tune.search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            # A stage package not imported yet (``tlkeras.distill``): the same object an import
            # binds, so the name means one thing whatever was imported first.
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'tlkeras' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
