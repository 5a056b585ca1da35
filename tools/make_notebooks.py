"""Writes the Colab notebooks in ``notebooks/`` from the cell sources below.

The notebooks are generated, so they are reproducible and free of outputs by construction:

    python tools/make_notebooks.py            # (re)write notebooks/*.ipynb and notebooks/README.md
    python tools/make_notebooks.py --check    # exit 1 if a committed file differs from this script

Every notebook has the same skeleton: a Markdown title, a cell that installs tlkeras only when it
runs in Colab, a cell tagged ``parameters`` (dataset, backbone, epochs, where to write; online
defaults use real data and pretrained weights), and then only calls into tlkeras' public API.
The test suite (``tests/test_notebooks.py``) executes each notebook offline with tiny values
injected in a cell right after the ``parameters`` cell (the papermill convention).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
REPO = "tlkeras/tlkeras"
INSTALL_SPEC = f"tlkeras @ git+https://github.com/{REPO}"
COLAB_URL = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{{file}}"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, tags: tuple[str, ...] = ()):
    cell = new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def badge(file: str) -> str:
    return f"[![Open In Colab]({BADGE})]({COLAB_URL.format(file=file)})"


# ---------------------------------------------------------------------------------------------
# Cells shared by every notebook


def install_cell():
    return code(f'''
        # Installs tlkeras (with its TensorFlow, tf_keras, tfmot, KerasTuner and LiteRT pins) in Colab.
        # Elsewhere install it once yourself:  pip install "{INSTALL_SPEC}"
        import sys

        if "google.colab" in sys.modules:
            %pip install -q "{INSTALL_SPEC}"
    ''')


INSTALL_NOTE = md("""
    If Colab says the session must restart after the install (it upgrades TensorFlow), restart it
    and continue with the next cell; the install does not need to run again.
""")

TFDS_CELL = code('''
    # A TFDS set is read offline by tlkeras (download=False): download and prepare it once here.
    if DATA.startswith("tfds:"):
        import tensorflow_datasets as tfds

        tfds.builder(DATA[len("tfds:"):]).download_and_prepare()
''')

# The quickstart falls back to the photos and ImageNet weights shipped in the package when TFDS (or
# the network) is not there, so the notebook runs offline as `python -m tlkeras.train` does.
TFDS_OR_SAMPLE_CELL = code('''
    # A TFDS set is read offline by tlkeras (download=False): download and prepare it once here.
    # Without a network (or TFDS), use the 300 flower photos and MobileNetV2 ImageNet weights
    # shipped inside tlkeras (tlkeras/quickstart/data, credits in ATTRIBUTION.md).
    if DATA.startswith("tfds:"):
        try:
            import tensorflow_datasets as tfds

            tfds.builder(DATA[len("tfds:"):]).download_and_prepare()
        except Exception as exc:  # no network, no TFDS, or no such set
            from tlkeras.quickstart.sample import IMAGE_SIZE as SAMPLE_SIZE, load_sample

            sample = load_sample()
            print(f"{DATA} is not available here ({type(exc).__name__}); using the {sum(sample.counts.values())} photos shipped with tlkeras")
            DATA, IMAGE_SIZE = str(sample.photos), SAMPLE_SIZE
            if BACKBONE == "mobilenet_v2" and WEIGHTS == "imagenet":
                WEIGHTS, ALPHA = str(sample.weights), 1.0  # the same ImageNet weights, from the package
''')

IMPORTS_CELL = code('''
    import io
    import json
    import logging
    from pathlib import Path

    import numpy as np
    from IPython.display import Image, Markdown, display
    from matplotlib.figure import Figure

    import tlkeras
    from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, load_data, train_model

    WORK = Path(WORK_DIR)
    print("tlkeras", tlkeras.__version__)
    # TensorFlow's INFO lines (SavedModel assets written) and retracing warnings are noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


    def show_images(images, titles, columns=8):
        """Shows uint8 images in a grid with one title each (a Figure, so no pyplot state)."""
        rows = -(-len(images) // columns)
        fig = Figure(figsize=(1.6 * columns, 1.9 * rows))
        for i, (image, title) in enumerate(zip(images, titles)):
            ax = fig.add_subplot(rows, columns, i + 1)
            ax.imshow(image)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        display(Image(data=buffer.getvalue()))


    def markdown_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return Markdown("\\n".join(lines))
''')

LOAD_DATA_CELL = code('''
    data_config = DataConfig(source=DATA, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE)
    data = load_data(data_config, IMAGE_SIZE, "softmax", SEED)
    print(f"{len(data.class_names)} classes: {', '.join(data.class_names)}")
    print(f"train {len(data.train)}, val {len(data.val)}, test {len(data.test) if data.test is not None else 0} images")
    show_images(data.train.x[:8], [data.class_names[i] for i in data.train.y[:8]])
''')


def train_cells(backbone_expr: str = "BACKBONE", weights_expr: str = "WEIGHTS", alpha_expr: str = "ALPHA", name_expr: str = "None"):
    return [
        md("""
            ## Train in two phases

            Phase 1 trains the new head on the frozen backbone (on features computed once, so it takes
            seconds); phase 2 unfreezes the top of the backbone (BatchNorm stays frozen) and fine-tunes
            at a lower learning rate. The run directory gets the config, the model, labels, history,
            metrics and plots.
        """),
        code(f'''
            config = RunConfig(
                data=data_config,
                model=ModelConfig(backbone={backbone_expr}, alpha={alpha_expr}, weights={weights_expr}),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, unfreeze=UNFREEZE, verbose=2),
                output_dir=str(WORK / "runs"),
                name={name_expr},{"  # None: <backbone>-<date>-<time>" if name_expr == "None" else ""}
                seed=SEED,
            )
            result = train_model(config, data)
            run_dir = result.run_dir
            print("run directory:", run_dir)
            print({{stage: f"{{seconds:.1f}} s" for stage, seconds in result.timings.items()}})
        '''),
    ]


def evaluation_cells(run: str = "run_dir"):
    return [
        md("""
            ## Evaluate

            `metrics.json` holds scikit-learn metrics on the validation split and on the held-out test
            split; the confusion matrix and the training curves (both phases, the dashed line marks the
            start of fine-tuning) are PNGs in the run directory.
        """),
        code(f'''
            metrics = json.loads((Path({run}) / "metrics.json").read_text())
            final = metrics["final"]
            print(f"val accuracy {{metrics['val']['accuracy']:.3f}}; "
                  f"{{metrics['final_split']}} accuracy {{final['accuracy']:.3f}}, macro F1 {{final['f1_macro']:.3f}}")
            display(markdown_table(
                ["class", "precision", "recall", "F1", "images"],
                [[name, f"{{m['precision']:.2f}}", f"{{m['recall']:.2f}}", f"{{m['f1']:.2f}}", m["support"]]
                 for name, m in final["per_class"].items()],
            ))
            display(Image(filename=str(Path({run}) / "confusion_matrix.png")))
            display(Image(filename=str(Path({run}) / "training_curves.png")))
        '''),
    ]


def export_cells(run: str = "run_dir"):
    return [
        md("""
            ## Export for the edge

            `export_run` converts the model to each requested TFLite variant, runs every variant with
            the LiteRT interpreter on the test split and compares it with the Keras model. The bundle
            holds the `.tflite` files, `labels.txt`, `metadata.json` (input/output quantization, class
            names, measured accuracy), a model card and, for `int8`, a C array for microcontrollers.
            `allow_drop=True` writes the bundle even when a variant loses more than `max_drop` points;
            the table shows the drop.
        """),
        code(f'''
            from tlkeras import ExportOptions, export_run

            exported = export_run(
                {run},
                WORK / "export" / Path({run}).name,
                ExportOptions(variants=EXPORT_VARIANTS, max_drop=MAX_DROP, allow_drop=True, overwrite=True),
                progress=print,
            )
            variants = exported.metadata["variants"]
            display(markdown_table(
                ["variant", "file", "KB", "accuracy", "agreement with Keras", "drop (points)"],
                [[name, v["file"], f"{{(exported.bundle_dir / v['file']).stat().st_size / 1024:.0f}}",
                  f"{{v['metrics']['accuracy']:.3f}}", f"{{v['metrics']['agreement']:.3f}}", f"{{v['metrics']['drop_points']:.1f}}"]
                 for name, v in variants.items()],
            ))
            if exported.failed:
                print("over max_drop:", exported.failed)
        '''),
    ]


def predict_cells(variant_expr: str = "EXPORT_VARIANTS[-1]"):
    return [
        md("""
            ## Predict with the LiteRT model

            `tlkeras.core.litert` needs only NumPy and `ai-edge-litert` (no TensorFlow): it feeds raw pixels,
            quantizing them with the model's own input scale when the model takes integers, and
            dequantizes the output. `export/classify.py` in the repository does the same from image
            files, for a Raspberry Pi or a server.
        """),
        code(f'''
            from tlkeras.core import litert
            from tlkeras import predict

            variant = {variant_expr}
            tflite_file = exported.variant_path(variant)
            split_name, split = data.eval_split
            images, labels = split.x[:8], split.y[:8]
            probabilities = litert.run_model(tflite_file, images)
            keras_probabilities = predict(result.model, images)
            agree = float(np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)))
            print(f"{{tflite_file.name}} ({{tflite_file.stat().st_size / 1024:.0f}} KB) agrees with Keras on {{agree:.0%}} of these images")
            show_images(images, [
                f"{{data.class_names[p.argmax()]}} {{p.max():.2f}}\\n(true: {{data.class_names[t]}})"
                for p, t in zip(probabilities, labels)
            ])
        '''),
    ]


def notebook(cells) -> nbformat.NotebookNode:
    # nbformat gives new cells random ids; fixed ones keep the files reproducible.
    cells = [nbformat.from_dict(dict(cell, id=f"cell-{i:02d}")) for i, cell in enumerate(cells)]
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    return nb


# ---------------------------------------------------------------------------------------------
# 01 quickstart


def quickstart():
    return notebook([
        md(f"""
            # tlkeras quickstart: images to a fine-tuned model to an int8 `.tflite`

            {badge("01_quickstart.ipynb")}

            An image folder (here TensorFlow Datasets' `tf_flowers`, 5 classes) becomes a fine-tuned
            MobileNetV2 in two phases, is evaluated (per-class metrics, confusion matrix, training
            curves), exported to a verified int8 TFLite model, and classifies images with LiteRT.
            A GPU runtime makes phase 2 faster; everything runs on CPU too. Without a network it uses
            the 300 flower photos and the MobileNetV2 ImageNet weights shipped inside tlkeras.
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `DATA` is an image folder (one subfolder per class, optionally under `train/ val/ test/`),
            a CSV of `path,label` rows, or `tfds:<name>`. `WEIGHTS` is `imagenet`, `none` or a local
            weights file for the backbone.
        """),
        code('''
            DATA = "tfds:tf_flowers"   # image folder, CSV file, or tfds:<name> (offline: the sample shipped with tlkeras)
            BACKBONE = "mobilenet_v2"  # tlkeras.list_backbones() lists them
            ALPHA = None               # width of the MobileNet families (None: 1.0)
            WEIGHTS = "imagenet"       # imagenet, none, or a weights file for the backbone
            IMAGE_SIZE = 224
            BATCH_SIZE = 32
            PHASE1_EPOCHS = 30         # head on the frozen backbone (cached features: seconds)
            PHASE2_EPOCHS = 5          # fine-tuning of the top blocks
            UNFREEZE = "blocks:6"      # layers:N, blocks:N, all or none
            EXPORT_VARIANTS = ("float32", "int8")
            MAX_DROP = 2.0             # accuracy points a variant may lose against Keras
            WORK_DIR = "tlkeras_quickstart"
            SEED = 42
        ''', tags=("parameters",)),
        TFDS_OR_SAMPLE_CELL,
        IMPORTS_CELL,
        md("## Load the images"),
        LOAD_DATA_CELL,
        *train_cells(),
        *evaluation_cells(),
        *export_cells(),
        *predict_cells(),
        md("""
            ## Next

            - The same from a terminal: `python -m tlkeras.train --data <folder>`, then
              `python -m tlkeras.export runs/<name>` and `python -m tlkeras.benchmark export/<name>`.
            - `02_hyperparameter_search.ipynb` searches the training hyperparameters,
              `03_compress_and_export.ipynb` prunes and quantizes, `04_tfhub_backbone.ipynb` uses a
              TF-Hub backbone.
        """),
    ])


# ---------------------------------------------------------------------------------------------
# 02 hyperparameter search


def hyperparameter_search():
    return notebook([
        md(f"""
            # Hyperparameter search with KerasTuner

            {badge("02_hyperparameter_search.ipynb")}

            `tlkeras.run_search` runs KerasTuner over the same model building and two-phase
            training as `train_model`: each trial is a training run scored on the validation split.
            It writes a table of the trials, a plot of the objective, and `best.yaml`, the best
            trial's config, which is retrained here and evaluated on the untouched test split.
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `SPACE` overrides the default search space: a scalar pins a hyperparameter, a list is a
            choice, `"lo..hi/log"` (or `{"min", "max", "step", "sampling"}`) is a range.
            `tlkeras.tune.space.HYPERPARAMETERS` lists the names; unnamed ones use the defaults of
            `tlkeras.tune.space.default_space`. `MAX_TRIALS` and `TIME_BUDGET` bound the search.
        """),
        code('''
            DATA = "tfds:tf_flowers"
            BACKBONE = "mobilenet_v2"
            ALPHA = None
            WEIGHTS = "imagenet"
            IMAGE_SIZE = 224
            BATCH_SIZE = 32
            PHASE1_EPOCHS = 30         # epochs of a full trial
            PHASE2_EPOCHS = 5
            TUNER = "hyperband"        # random, hyperband or bayesian
            MAX_TRIALS = 12
            TIME_BUDGET = "45m"        # no trial starts after it; a running one is stopped
            SPACE = {
                "dropout": [0.0, 0.2, 0.4],
                "phase1_lr": "1e-4..1e-2/log",
                "phase2_lr_factor": [0.03, 0.1],
                "unfreeze": ["none", "blocks:2", "blocks:6"],
                "augment": ["off", "light"],
                "label_smoothing": [0.0, 0.1],
                "hidden_units": 0,
                "weight_decay": 0.0,
            }
            WORK_DIR = "tlkeras_search"
            SEED = 42
        ''', tags=("parameters",)),
        TFDS_CELL,
        IMPORTS_CELL,
        md("## Load the images once (every trial reuses them)"),
        LOAD_DATA_CELL,
        md("""
            ## Search

            Trials with an unaugmented phase 1 share the backbone features, computed once for the whole
            search. The search directory keeps KerasTuner's state: re-running this cell (after a Colab
            disconnect, say) continues the search without redoing finished trials; with other settings
            it refuses, so change `name` or pass `SearchOptions(overwrite=True)` to start over.
        """),
        code('''
            from tlkeras import SearchOptions, SearchSpace, run_search

            base = RunConfig(
                data=data_config,
                model=ModelConfig(backbone=BACKBONE, alpha=ALPHA, weights=WEIGHTS),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, verbose=0),
                output_dir=str(WORK / "searches"),
                name="search",
                seed=SEED,
            )
            print(SearchSpace.create(SPACE, base).describe())
            search = run_search(base, SPACE, SearchOptions(tuner=TUNER, max_trials=MAX_TRIALS, time_budget=TIME_BUDGET), data=data)
            print(f"{search.info['trials']} trials in {search.info['seconds']} s, stopped by {search.info['stopped_by']}")
        '''),
        md("## The trials, best first"),
        code('''
            display(Markdown((search.directory / "trials.md").read_text()))
            display(Image(filename=str(search.directory / "objective.png")))
            print(f"best {search.objective}: {search.best_score:.3f} with", search.best_values)
        '''),
        md("""
            ## Retrain the best configuration

            `best.yaml` is a full `RunConfig` (full epochs, even when Hyperband shortened the trial):
            `python -m tlkeras.train --config <search>/best.yaml` does the same from a terminal.
        """),
        code('''
            best_config = tlkeras.load_config(search.directory / "best.yaml")
            best_config.output_dir = str(WORK / "runs")
            best_config.train.verbose = 2
            result = train_model(best_config, data)
            run_dir = result.run_dir
            print("run directory:", run_dir)
        '''),
        *evaluation_cells(),
    ])


# ---------------------------------------------------------------------------------------------
# 03 compress and export


def compress_and_export():
    return notebook([
        md(f"""
            # Compress and export: pruning, quantization-aware training, edge benchmark

            {badge("03_compress_and_export.ipynb")}

            A trained run is compressed with TensorFlow Model Optimization (`tlkeras.optimize`):
            magnitude pruning, quantization-aware training (QAT) and both (prune-preserving QAT). Each
            result is a new run directory with a report. Every model is exported to TFLite variants,
            verified with LiteRT, and benchmarked: file size, gzipped size, latency and accuracy of all
            variants in one table and one size-vs-accuracy plot.
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `COMPRESSIONS` picks the recipes; each adds a run directory, a bundle and rows in the
            benchmark. The compressed models are exported to `COMPRESSED_VARIANTS`.
        """),
        code('''
            DATA = "tfds:tf_flowers"
            BACKBONE = "mobilenet_v2"
            ALPHA = None
            WEIGHTS = "imagenet"
            IMAGE_SIZE = 224
            BATCH_SIZE = 32
            PHASE1_EPOCHS = 30
            PHASE2_EPOCHS = 5
            UNFREEZE = "blocks:6"
            FINETUNE_EPOCHS = 3        # fine-tuning epochs of each compression stage
            TARGET_SPARSITY = 0.5      # share of zero weights after pruning
            COMPRESSIONS = ("pruned", "qat", "pqat")  # pruning, QAT, and pruning then prune-preserving QAT
            BASE_VARIANTS = ("float32", "dynamic_range", "float16", "int8")
            COMPRESSED_VARIANTS = ("int8",)
            MAX_DROP = 2.0             # accuracy points a variant may lose against its Keras model
            BENCHMARK_ITERATIONS = 100  # timed invoke() calls per variant
            WORK_DIR = "tlkeras_compress"
            SEED = 42
        ''', tags=("parameters",)),
        TFDS_CELL,
        IMPORTS_CELL,
        md("## Load the images"),
        LOAD_DATA_CELL,
        md("## Train the model to compress"),
        code('''
            config = RunConfig(
                data=data_config,
                model=ModelConfig(backbone=BACKBONE, alpha=ALPHA, weights=WEIGHTS),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, unfreeze=UNFREEZE, verbose=2),
                output_dir=str(WORK / "runs"),
                seed=SEED,
            )
            base = train_model(config, data)
            print("base run:", base.run_dir, f"test accuracy {base.metrics['final']['accuracy']:.3f}")
        '''),
        md("""
            ## Prune, QAT, and both

            Each stage fine-tunes with the run's phase-2 settings (`FINETUNE_EPOCHS` here). Pruning
            zeroes the smallest weights on a polynomial schedule (smaller gzipped files); QAT simulates
            int8 rounding while training, so the int8 model keeps more accuracy than post-training
            quantization; prune-preserving QAT (PQAT) keeps the zeros through QAT. Each report compares
            accuracy, sparsity and gzipped sizes before and after (`tflite=True` adds its own int8
            conversion; here the export below converts and verifies every model).
        """),
        code('''
            from tlkeras import FineTuneOptions, PruningOptions, QATOptions, optimize_run

            finetune = FineTuneOptions(epochs=FINETUNE_EPOCHS, verbose=0)
            pruning = PruningOptions(target_sparsity=TARGET_SPARSITY)
            compressed = {}
            recipes = {
                "pruned": {"pruning": pruning},
                "qat": {"qat": QATOptions()},
                "pqat": {"pruning": pruning, "qat": QATOptions()},
            }
            for label in COMPRESSIONS:
                optimized = optimize_run(base.run_dir, **recipes[label], finetune=finetune, data=data,
                                         name=f"{base.run_dir.name}-{label}", tflite=False)  # export_run converts below
                compressed[label] = optimized.run_dir
                print(f"--- {label}: {optimized.run_dir}")
                display(Markdown((optimized.run_dir / "optimization.md").read_text()))
        '''),
        md("""
            ## Export every model

            The base model is exported to float and post-training quantized variants, the compressed
            models to int8. Each variant is verified with LiteRT on the test split.
        """),
        code('''
            from tlkeras import ExportOptions, export_run
            from tlkeras.core.loading import keras_load_scope

            runs = {"base": (base.run_dir, BASE_VARIANTS), **{k: (v, COMPRESSED_VARIANTS) for k, v in compressed.items()}}
            bundles = {}
            for label, (run, variants) in runs.items():
                # QAT models hold tfmot layers: load them inside tfmot's scope.
                with keras_load_scope():
                    exported = export_run(run, WORK / "export" / run.name,
                                          ExportOptions(variants=variants, max_drop=MAX_DROP, allow_drop=True, overwrite=True))
                bundles[label] = exported.bundle_dir
                accuracy = {v: round(m["metrics"]["accuracy"], 3) for v, m in exported.metadata["variants"].items()}
                print(f"{label}: {exported.bundle_dir} {accuracy}")
        '''),
        md("""
            ## Benchmark: size, latency, accuracy

            `benchmark_bundle` times each variant's `invoke()` on one image with LiteRT (XNNPACK),
            round-robin over the variants so background load spreads evenly, and takes the accuracy the
            export measured. The rows of all bundles go into one table and one plot; agreement and drop
            compare each variant with its own Keras model (the compressed one for compressed models),
            the dashed line is the base Keras model.
        """),
        code('''
            from tlkeras.benchmark.bundle import BenchmarkOptions, benchmark_bundle, format_markdown, plot_size_vs_accuracy, write_benchmark

            options = BenchmarkOptions(threads=(1,), iterations=BENCHMARK_ITERATIONS, warmup=min(10, BENCHMARK_ITERATIONS))
            results = {label: benchmark_bundle(bundle, options) for label, bundle in bundles.items()}
            for label, res in results.items():
                write_benchmark(res, bundles[label])  # benchmark.md/.json and size_vs_accuracy.png per bundle

            # One table over all bundles: sizes and latencies relative to the base model's float32.
            reference = next(r for r in results["base"]["rows"] if r["variant"] == "float32")
            rows = []
            for label, res in results.items():
                for row in res["rows"]:
                    row = dict(row, variant=f"{label} {row['variant']}")
                    row["size_ratio"] = row["bytes"] / reference["bytes"]
                    row["latency_ratio"] = row["latency"]["1"]["p50_ms"] / reference["latency"]["1"]["p50_ms"]
                    rows.append(row)
            combined = dict(results["base"], bundle=str(WORK / "export"), name=", ".join(results), rows=rows)
            display(Markdown(format_markdown(combined)))
            plot_size_vs_accuracy(combined, WORK / "size_vs_accuracy.png")
            display(Image(filename=str(WORK / "size_vs_accuracy.png")))
        '''),
        md("""
            From a terminal: `python -m tlkeras.optimize runs/<name> --prune 0.5 --qat` (writes
            `runs/<name>-prune50-qat`), `python -m tlkeras.export runs/<name>-prune50-qat --quantize int8`
            and `python -m tlkeras.benchmark export/<name>-prune50-qat`.
        """),
    ])


# ---------------------------------------------------------------------------------------------
# 04 TF-Hub backbone


def tfhub_backbone():
    return notebook([
        md(f"""
            # A TF-Hub backbone

            {badge("04_tfhub_backbone.ipynb")}

            Any TF-Hub (now Kaggle Models) image feature-vector model can be the backbone:
            `backbone="hub:<handle>"` with a tfhub.dev or Kaggle URL, or `hub:<dir>` with a downloaded
            SavedModel directory (for machines without network). The flow is the quickstart's: train
            in two phases, evaluate, export int8, predict with LiteRT.

            A TF-Hub model is one opaque layer: phase 2 fine-tunes all of it (`UNFREEZE="all"`, at the
            phase-2 learning rate) or none of it (`UNFREEZE="none"`), and it runs in inference mode, so
            its BatchNorm statistics stay as pretrained.
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `HUB_HANDLE` must be an image feature-vector model that takes `IMAGE_SIZE` x `IMAGE_SIZE`
            RGB images with values in [0, 1] and returns `(batch, features)`.
        """),
        code('''
            DATA = "tfds:tf_flowers"
            HUB_HANDLE = "https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/100-224-feature-vector/2"
            IMAGE_SIZE = 224
            BATCH_SIZE = 32
            PHASE1_EPOCHS = 30
            PHASE2_EPOCHS = 3
            UNFREEZE = "all"           # all (fine-tune the whole TF-Hub model) or none
            EXPORT_VARIANTS = ("float32", "int8")
            MAX_DROP = 2.0             # accuracy points a variant may lose against Keras
            WORK_DIR = "tlkeras_tfhub"
            SEED = 42
        ''', tags=("parameters",)),
        TFDS_CELL,
        IMPORTS_CELL,
        md("## Load the images"),
        LOAD_DATA_CELL,
        code('''
            from tlkeras.runs import default_run_name  # hub handles end in a version number: name the run
        '''),
        *train_cells(backbone_expr='"hub:" + HUB_HANDLE', weights_expr='"none"', alpha_expr="None",
                     name_expr='default_run_name("tfhub")'),
        code('''
            hub_layer = result.model.get_layer("backbone_hub")
            print(f"TF-Hub layer {hub_layer.handle}: {hub_layer.output_shape[-1]} features, "
                  f"{sum(int(np.prod(w.shape)) for w in hub_layer.weights):,} weights")
        '''),
        *evaluation_cells(),
        *export_cells(),
        *predict_cells(),
    ])


def text_classifier():
    return notebook([
        md(f"""
            # A text classifier for phones: BERT or word vectors, exported for MediaPipe

            {badge("05_text_classifier.ipynb")}

            Fine-tune a pretrained text encoder on labelled sentences and export it for MediaPipe
            Tasks' `TextClassifier` (Android, iOS, web): a TF-Hub small BERT by default, or the
            `word_embedding` model started from pretrained word vectors, which needs no network.
            Same two phases as for images: phase 1 fits the head on the frozen encoder, phase 2
            fine-tunes the encoder at a lower rate and is kept only when it beats phase 1 on val.

            Every exported variant is loaded in MediaPipe's TextClassifier on the test texts and its
            top-1 compared with Keras' (`pip install mediapipe` for that check).
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `DATA` is a CSV of `text,label[,split]`, a folder of class folders of `.txt` files, or a
            TFDS text set (`tfds:imdb_reviews`). `ENCODER` is `small_bert`, `mobilebert`,
            `word_embedding` or `hub:<encoder>` (then `PREPROCESS` names its preprocessing model);
            offline, use `word_embedding` with `WORD_VECTORS` (a GloVe / word2vec / fastText text
            file) or local SavedModel directories.
        """),
        code('''
            DATA = "tfds:imdb_reviews"
            ENCODER = "small_bert"       # small_bert, mobilebert, word_embedding, hub:<encoder dir or handle>
            PREPROCESS = None            # the BERT preprocessing model for a hub: encoder (None: the registered pairing)
            WORD_VECTORS = None          # word_embedding only: a word-vectors text file
            SEQUENCE_LENGTH = 128
            BATCH_SIZE = 32
            PHASE1_EPOCHS = 30
            PHASE2_EPOCHS = 3
            EXPORT_VARIANTS = ("float32", "dynamic_range")
            MAX_DROP = 2.0
            WORK_DIR = "tlkeras_text"
            SEED = 42
        ''', tags=("parameters",)),
        TFDS_CELL,
        code('''
            import json
            import logging
            from pathlib import Path

            from IPython.display import Markdown, display

            import tlkeras
            from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, train_model
            from tlkeras.runs import default_run_name

            WORK = Path(WORK_DIR)
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            print("tlkeras", tlkeras.__version__)
        '''),
        md("## Train in two phases"),
        code('''
            config = RunConfig(
                data=DataConfig(source=DATA, modality="text", sequence_length=SEQUENCE_LENGTH, batch_size=BATCH_SIZE),
                model=ModelConfig(backbone=ENCODER, preprocess=PREPROCESS, word_vectors=WORD_VECTORS),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, verbose=0),
                output_dir=str(WORK / "runs"), name=default_run_name("text"), seed=SEED,
            )
            result = train_model(config)
            run_dir = result.run_dir
            m = result.metrics
            print(f"val accuracy {m['val']['accuracy']:.3f}, {m['final_split']} accuracy {m['final']['accuracy']:.3f}")
            print(result.info["selection"]["message"] if result.info.get("selection") else "phase 2 did not run")
            print("texts truncated at", SEQUENCE_LENGTH, "tokens:", result.info["text"]["truncated"])
        '''),
        md("## Export for MediaPipe TextClassifier"),
        code('''
            from tlkeras import ExportOptions, export_run

            exported = export_run(run_dir, WORK / "export" / run_dir.name,
                                  ExportOptions(variants=EXPORT_VARIANTS, max_drop=MAX_DROP, overwrite=True))
            rows = ["| variant | KB | accuracy | LiteRT = Keras | MediaPipe = Keras | p50 ms |", "|---|---|---|---|---|---|"]
            for name, v in exported.metadata["variants"].items():
                mp = (v.get("mediapipe") or {}).get("agreement")
                rows.append(f"| {name} | {v['bytes'] / 1024:.0f} | {v['metrics']['accuracy']:.3f} | {v['metrics']['agreement']:.3f} | "
                            f"{'not checked' if mp is None else f'{mp:.3f}'} | {v['latency']['p50_ms']:.2f} |")
            display(Markdown("\\n".join(rows)))
            print("bundle:", exported.bundle_dir)
        '''),
        md("## Classify a sentence on the phone's runtime"),
        code('''
            bundle = exported.bundle_dir
            model_file = bundle / exported.metadata["variants"][EXPORT_VARIANTS[-1]]["file"]
            sentence = "I really loved it, the best I have seen this year!"
            try:
                from mediapipe.tasks.python import BaseOptions, text

                classifier = text.TextClassifier.create_from_options(
                    text.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_file))))
                top = classifier.classify(sentence).classifications[0].categories[0]
                print(f"MediaPipe TextClassifier: {top.category_name} ({top.score:.2f})")
            except ImportError:
                print("pip install mediapipe to run the TextClassifier here; the .tflite carries its tokenizer and labels")
        '''),
    ])


NOTEBOOKS = {
    "01_quickstart.ipynb": (quickstart, "images to a two-phase fine-tuned model, evaluation, int8 export, a LiteRT prediction"),
    "02_hyperparameter_search.ipynb": (hyperparameter_search, "a KerasTuner search, the trials table and plot, retraining the best"),
    "03_compress_and_export.ipynb": (compress_and_export, "pruning, QAT and PQAT, export of every model, benchmark table and size-vs-accuracy plot"),
    "04_tfhub_backbone.ipynb": (tfhub_backbone, "the quickstart flow with a TF-Hub (Kaggle Models) backbone"),
    "05_text_classifier.ipynb": (text_classifier, "a TF-Hub BERT (or word vectors offline) fine-tuned on sentences, exported and checked in MediaPipe's TextClassifier"),
}


def readme() -> str:
    lines = [
        "# Notebooks",
        "",
        "Colab-ready notebooks that use only tlkeras' public API. The first cell installs tlkeras when the",
        "notebook runs in Colab; the cell tagged `parameters` holds the dataset, backbone, epochs and output",
        "folder. The defaults use real data (TensorFlow Datasets' `tf_flowers`) and pretrained weights, so",
        "they need network; on a machine without it, point `DATA` at an image folder, `WEIGHTS` at a",
        "weights file (or `none`) and, in `04`, `HUB_HANDLE` at a downloaded SavedModel directory.",
        "",
        "The notebooks are generated by `tools/make_notebooks.py` and committed without outputs: edit the",
        "generator, then run `python tools/make_notebooks.py`. `tests/test_notebooks.py` executes every",
        "notebook offline with tiny parameters injected after its `parameters` cell, and fails when a",
        "committed notebook has outputs or differs from the generator.",
        "",
    ]
    for file, (_, summary) in NOTEBOOKS.items():
        lines.append(f"- {badge(file)} `{file}`: {summary}")
    return "\n".join(lines) + "\n"


def render() -> dict[str, str]:
    """The text of every generated file, keyed by its path relative to ``notebooks/``."""
    files = {}
    for file, (build, _) in NOTEBOOKS.items():
        nb = build()
        nbformat.validate(nb)
        files[file] = nbformat.writes(nb) + "\n"
    files["README.md"] = readme()
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = NOTEBOOK_DIR / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            NOTEBOOK_DIR.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print("wrote", path.relative_to(ROOT))
    if stale:
        print("out of date (run python tools/make_notebooks.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
