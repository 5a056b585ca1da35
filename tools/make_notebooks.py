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


# ---------------------------------------------------------------------------------------------
# 06 object detection and 07 segmentation: a data folder found on disk (the repository's fixtures
# sit in ../shared/data), or a tiny synthetic set written by the notebook when it is absent.

LOCATE_CELL = code('''
    def locate(path):
        """``path`` as given, else looked up from the working folder and each folder above it
        (a notebook opened in notebooks/ finds ../shared/data/... of the checkout); None if absent."""
        path = Path(path)
        if path.is_absolute():
            return path if path.exists() else None
        for base in (Path.cwd(), *Path.cwd().parents):
            if (base / path).exists():
                return (base / path).resolve()
        return None


    def figure_png(fig):
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=80)
        display(Image(data=buffer.getvalue()))


    def markdown_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return Markdown("\\n".join(lines))
''')


def object_detection():
    return notebook([
        md(f"""
            # Object detection: BCCD blood cells to a MediaPipe ObjectDetector `.tflite`

            {badge("06_object_detection.ipynb")}

            A Pascal VOC folder (here BCCD: 364 blood-smear images with red cells, white cells and
            platelets) becomes an SSD-style detector on a MobileNetV2 backbone, trained in two
            phases, scored with COCO metrics (pycocotools), exported to float32, float16 and int8
            `.tflite` files that MediaPipe's `ObjectDetector` loads as they are, each verified with
            LiteRT and MediaPipe on the test split, and run on a few test images.
            Pascal VOC, COCO JSON, YOLO folders and detection CSVs are recognised from their layout
            (`docs/detection.md`).
        """),
        md("""
            ## What it cannot do offline

            No COCO-pretrained detector is reachable offline: the neck and head start from scratch on
            top of the **ImageNet** MobileNetV2 (`WEIGHTS = "imagenet"` downloads it once; offline,
            point `WEIGHTS` at `mobilenet_v2_1.0_224_imagenet_no_top.h5`). With a few hundred images
            that is the main cost against detectors fine-tuned from COCO. To start from other
            backbone weights (a COCO-pretrained MobileNetV2, say), set `WEIGHTS` to their Keras
            weights file; it must fit `keras.applications.MobileNetV2(include_top=False)` layer by
            layer. MediaPipe's NMS is class-agnostic at IoU 0.3, which suppresses some touching
            objects (BCCD's overlapping red cells).
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `DATA` is a detection folder or CSV. The BCCD fixture sits in `../shared/data/bccd` of a
            tlkeras checkout; when `DATA` is not found the notebook writes a tiny synthetic VOC set
            (coloured boxes on noise) so that it still runs end to end. Elsewhere (Colab), BCCD is
            `!git clone https://github.com/Shenggan/BCCD_Dataset` with `DATA = "BCCD_Dataset/BCCD"`.
            `MAX_IMAGES` keeps only the first images of each split of a VOC folder (a quick look).
            The epochs and sizes below are the detection defaults.
        """),
        code('''
            DATA = "../shared/data/bccd"  # VOC / COCO / YOLO folder or detection CSV (absent: a tiny synthetic set)
            MAX_IMAGES = None             # VOC only: keep the first N images of each split (None: all)
            BACKBONE = "mobilenet_v2"     # mobilenet_v2 or mobilenet (v1)
            ALPHA = None                  # width multiplier (None: 1.0)
            WEIGHTS = "imagenet"          # imagenet, none, or a Keras weights file for the backbone
            IMAGE_SIZE = 320              # a multiple of 32
            BATCH_SIZE = 16
            PHASE1_EPOCHS = 40            # neck and head on cached backbone features
            PHASE2_EPOCHS = 12            # the top backbone blocks train too, on augmented views
            UNFREEZE = "blocks:12"
            EXPORT_VARIANTS = ("float32", "float16", "int8")
            SCORE_THRESHOLD = 0.3         # for the drawn detections
            WORK_DIR = "tlkeras_detection"
            SEED = 42
        ''', tags=("parameters",)),
        code('''
            import io
            import logging
            import shutil
            from pathlib import Path

            import numpy as np
            from IPython.display import Image, Markdown, display
            from matplotlib.figure import Figure
            from matplotlib.patches import Rectangle
            from PIL import Image as PILImage

            import tlkeras
            from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, train_model
            from tlkeras.core.detection.readers import read_detection_data

            WORK = Path(WORK_DIR)
            WORK.mkdir(parents=True, exist_ok=True)
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            print("tlkeras", tlkeras.__version__)
        '''),
        LOCATE_CELL,
        md("## Find the data (or make a tiny set)"),
        code('''
            def synthetic_voc(root, n=36, seed=0):
                """A Pascal VOC folder of noise images with 1-3 red or blue rectangles, split 50/25/25."""
                rng = np.random.default_rng(seed)
                for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                names = []
                for i in range(n):
                    image = rng.integers(70, 130, (96, 128, 3)).astype("uint8")
                    objects = ""
                    for _ in range(rng.integers(1, 4)):
                        k, bw, bh = int(rng.integers(0, 2)), int(rng.integers(24, 50)), int(rng.integers(24, 50))
                        x0, y0 = int(rng.integers(0, 128 - bw)), int(rng.integers(0, 96 - bh))
                        image[y0:y0 + bh, x0:x0 + bw] = ((230, 40, 40), (40, 60, 230))[k]
                        objects += (f"<object><name>{('red', 'blue')[k]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                                    f"<xmax>{x0 + bw}</xmax><ymax>{y0 + bh}</ymax></bndbox></object>")
                    name = f"img{i:03d}"
                    PILImage.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
                    (root / "Annotations" / f"{name}.xml").write_text(
                        f"<annotation><filename>{name}.png</filename><size><width>128</width><height>96</height>"
                        f"<depth>3</depth></size>{objects}</annotation>")
                    names.append(name)
                cut = (n // 2, n * 3 // 4)
                for split, part in (("train", names[:cut[0]]), ("val", names[cut[0]:cut[1]]), ("test", names[cut[1]:])):
                    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\\n".join(part) + "\\n")
                return root


            def first_of_each_split(voc, target, count):
                """A copy of the VOC folder ``voc`` with the first ``count`` images of each split file."""
                if target.exists():
                    shutil.rmtree(target)
                for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
                    (target / sub).mkdir(parents=True)
                for split_file in sorted((voc / "ImageSets" / "Main").glob("*.txt")):
                    ids = split_file.read_text().split()[:count]
                    (target / "ImageSets" / "Main" / split_file.name).write_text("\\n".join(ids) + "\\n")
                    for name in ids:
                        shutil.copy(voc / "Annotations" / f"{name}.xml", target / "Annotations")
                        for image in (voc / "JPEGImages").glob(f"{name}.*"):
                            shutil.copy(image, target / "JPEGImages")
                return target


            source = locate(DATA)
            if source is None:
                print(f"{DATA} is not here: writing a tiny synthetic VOC set (coloured boxes on noise) instead")
                source = synthetic_voc(WORK / "synthetic_voc")
            if MAX_IMAGES and (source / "ImageSets" / "Main").is_dir():
                source = first_of_each_split(source, WORK / "subset", MAX_IMAGES)
            data = read_detection_data(source)
            summary = data.summary()
            print(f"{source}: {summary['layout']}, classes {', '.join(data.class_names)}")
            print(f"images train {summary['train']}, val {summary['val']}, test {summary['test']}; boxes {summary['boxes']}")
            print("repaired on reading:", summary["quirks"])
        '''),
        code('''
            COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")


            def show_boxes(items, columns=4):
                """items: (image path, [(xmin, ymin, xmax, ymax, class id, score or None)], title)."""
                rows = -(-len(items) // columns)
                fig = Figure(figsize=(3.2 * columns, 2.8 * rows))
                for i, (path, boxes, title) in enumerate(items):
                    ax = fig.add_subplot(rows, columns, i + 1)
                    ax.imshow(PILImage.open(path).convert("RGB"))
                    for x0, y0, x1, y1, k, score in boxes:
                        colour = COLOURS[int(k) % len(COLOURS)]
                        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, linewidth=1.2))
                        label = data.class_names[int(k)] + ("" if score is None else f" {score:.2f}")
                        ax.text(x0, y0, label, color="white", fontsize=6, bbox={"facecolor": colour, "pad": 1, "linewidth": 0})
                    ax.set_title(title, fontsize=8)
                    ax.axis("off")
                figure_png(fig)


            show_boxes([(s.path, [(*b, k, None) for b, k in zip(s.boxes, s.labels)], Path(s.path).name) for s in data.train[:4]])
        '''),
        md("""
            ## Train in two phases

            Phase 1 trains the FPN neck and the SSDLite head on the frozen backbone, on backbone
            features computed once per training image and its mirror image; phase 2 also trains the
            top backbone blocks (BatchNorm frozen) on augmented views (flip, scale jitter / crop,
            colour). The kept weights are the best val AP50 seen in either phase. The run folder
            holds the model, `metrics.json`, `detection.json` (anchors, box coder) and `report.html`.
        """),
        code('''
            config = RunConfig(
                data=DataConfig(source=str(source), image_size=IMAGE_SIZE, batch_size=BATCH_SIZE),
                model=ModelConfig(task="detection", backbone=BACKBONE, alpha=ALPHA, weights=WEIGHTS),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, unfreeze=UNFREEZE, verbose=1),
                output_dir=str(WORK / "runs"),
                seed=SEED,
            )
            result = train_model(config)
            run_dir = result.run_dir
            print("run directory:", run_dir)
            print({stage: f"{seconds:.1f} s" for stage, seconds in result.timings.items()})
        '''),
        md("""
            ## Metrics

            COCO metrics from pycocotools on val and on the test split: AP (IoU .50:.95), AP50, AP75,
            AR100 and AP per class. Predictions are post-processed as MediaPipe's ObjectDetector does
            (score >= 0.05, class-agnostic NMS at IoU 0.3, at most 100), so these are the numbers an
            app gets. `report.html` in the run folder adds precision-recall curves and a gallery.
        """),
        code('''
            metrics = result.metrics
            display(markdown_table(
                ["split", "AP", "AP50", "AP75", "AR100"],
                [[split, *(f"{metrics[key][k]:.3f}" for k in ("AP", "AP50", "AP75", "AR100"))]
                 for split, key in (("val", "val"), (metrics["final_split"], "final"))],
            ))
            display(markdown_table(
                ["class", "AP", "AP50", "boxes"],
                [[name, f"{m['AP']:.3f}", f"{m['AP50']:.3f}", m.get("boxes", "")] for name, m in metrics["final"]["per_class"].items()],
            ))
            fig = Figure(figsize=(5, 3.5))
            ax = fig.add_subplot(1, 1, 1)
            curves = metrics["final"].get("pr_curve_50", {})  # absent when the model detected nothing
            for name, precision in curves.items():
                ax.plot(np.linspace(0, 1, len(precision)), np.maximum(precision, 0), label=name)
            ax.set(xlabel="recall", ylabel="precision", title="precision-recall at IoU 0.5", xlim=(0, 1), ylim=(0, 1.02))
            if curves:
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "no detections", ha="center")
            figure_png(fig)
        '''),
        md("""
            ## Export for MediaPipe's ObjectDetector

            Each variant takes raw pixels (uint8 for int8) and has two float32 outputs (box
            encodings and class scores for every anchor); the anchors, box coder and labels are in
            the file's metadata (written with MediaPipe's own writer), so `ObjectDetector` decodes
            and suppresses them itself. Every variant is checked on the test split: LiteRT's AP50
            within 1 point of Keras (3 for int8), MediaPipe's within 1 point of LiteRT's; a variant
            that fails a check fails the export and nothing is written.
        """),
        code('''
            from tlkeras import ExportOptions, export_run

            exported = export_run(run_dir, WORK / "export" / run_dir.name,
                                  ExportOptions(variants=EXPORT_VARIANTS, overwrite=True), progress=print)
            bundle = exported.bundle_dir
            variants = exported.metadata["variants"]
            display(markdown_table(
                ["variant", "KB", "LiteRT AP50", "MediaPipe AP50", "verified on"],
                [[name, f"{v['bytes'] / 1024:.0f}", f"{v['metrics']['AP50']:.3f}",
                  f"{v['mediapipe']['AP50']:.3f}" if "AP50" in (v.get("mediapipe") or {}) else "not checked",
                  ", ".join(v["verified_on"])] for name, v in variants.items()],
            ))
            print("bundle:", bundle)
        '''),
        md("""
            ## Detect with MediaPipe

            The exported file in MediaPipe Tasks' `ObjectDetector` (the same API on Android, iOS and
            the web) on a few test images: predictions with a score of at least `SCORE_THRESHOLD`
            (left) against the true boxes (right).
        """),
        code('''
            model_file = bundle / variants[EXPORT_VARIANTS[-1]]["file"]
            samples = (data.test or data.val)[:3]
            try:
                import mediapipe as mp
                from mediapipe.tasks.python import BaseOptions, vision

                detector = vision.ObjectDetector.create_from_options(vision.ObjectDetectorOptions(
                    base_options=BaseOptions(model_asset_path=str(model_file)), score_threshold=SCORE_THRESHOLD, max_results=100))
                items = []
                for s in samples:
                    found = detector.detect(mp.Image.create_from_file(str(s.path))).detections
                    boxes = [(d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.origin_x + d.bounding_box.width,
                              d.bounding_box.origin_y + d.bounding_box.height, data.class_names.index(d.categories[0].category_name),
                              d.categories[0].score) for d in found]
                    items += [(s.path, boxes, f"{model_file.name}: {len(boxes)} found"), (s.path, [(*b, k, None) for b, k in zip(s.boxes, s.labels)], "true boxes")]
                print(f"MediaPipe ObjectDetector ran {model_file.name} on {len(samples)} images")
                show_boxes(items, columns=2)
            except ImportError:
                print("pip install mediapipe to run the ObjectDetector here; the .tflite carries its anchors and labels")
        '''),
        md("""
            From a terminal: `python -m tlkeras.train --data ../shared/data/bccd --weights <weights.h5>`,
            `python -m tlkeras.evaluate runs/<name>` and `python -m tlkeras.export runs/<name>`.
        """),
    ])


def segmentation():
    return notebook([
        md(f"""
            # Segmentation: cell nuclei to a MediaPipe ImageSegmenter `.tflite`

            {badge("07_segmentation.ipynb")}

            Images and masks (here microscopy images with their nucleus masks) become a per-pixel
            classifier: a MobileNetV2 encoder with ImageNet weights and a light U-Net decoder,
            trained in two phases, scored with IoU per class, mIoU and Dice, exported to float32,
            float16 and int8 `.tflite` files for MediaPipe's `ImageSegmenter`, each checked with
            LiteRT and MediaPipe on the test split, and run on a few test images.
        """),
        install_cell(),
        INSTALL_NOTE,
        md("""
            ## Parameters

            `DATA` is a folder with `images/` and `masks/` (directly or under `train/ val/ test/`);
            masks are PNGs of class ids, class 0 the background, `labels.txt` names them. The nuclei
            fixture sits in `../shared/data/nuclei` of a tlkeras checkout; when `DATA` is not found the
            notebook writes a tiny synthetic set (bright blobs on a dark background) so that it still
            runs end to end. `MAX_IMAGES` keeps only the first images of each split. The epochs and
            sizes below are the segmentation defaults. `WEIGHTS = "imagenet"` downloads the
            MobileNetV2 weights once; offline, point it at `mobilenet_v2_1.0_224_imagenet_no_top.h5`.
        """),
        code('''
            DATA = "../shared/data/nuclei"  # images/ + masks/ folder (absent: a tiny synthetic set)
            MAX_IMAGES = None               # keep the first N images of each split (None: all)
            BACKBONE = "mobilenet_v2"       # the encoder (MobileNetV2 only, for now)
            WEIGHTS = "imagenet"            # imagenet or a Keras weights file for the encoder
            IMAGE_SIZE = 256                # a multiple of 32
            BATCH_SIZE = 16
            PHASE1_EPOCHS = 8               # the decoder on the frozen encoder
            PHASE2_EPOCHS = 6               # the encoder too, at a 10x lower rate
            EXPORT_VARIANTS = ("float32", "float16", "int8")
            MAX_DROP = 2.0                  # mIoU points int8 may lose against Keras
            VERIFY_WEB = True               # also run MediaPipe for Web in headless Chromium when it is installed
            WORK_DIR = "tlkeras_segmentation"
            SEED = 42
        ''', tags=("parameters",)),
        code('''
            import io
            import logging
            import shutil
            from pathlib import Path

            import numpy as np
            from IPython.display import Image, Markdown, display
            from matplotlib.figure import Figure
            from PIL import Image as PILImage

            import tlkeras
            from tlkeras import DataConfig, ModelConfig, RunConfig, TrainConfig, train_model

            WORK = Path(WORK_DIR)
            WORK.mkdir(parents=True, exist_ok=True)
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            print("tlkeras", tlkeras.__version__)
        '''),
        LOCATE_CELL,
        md("## Find the data (or make a tiny set)"),
        code('''
            def synthetic_blobs(root, counts=(("train", 16), ("val", 6), ("test", 6)), size=96, seed=0):
                """train/ val/ test/ folders of dark noise images with bright discs (class 1) and their masks."""
                rng = np.random.default_rng(seed)
                yy, xx = np.mgrid[:size, :size]
                for split, n in counts:
                    for sub in ("images", "masks"):
                        (root / split / sub).mkdir(parents=True, exist_ok=True)
                    for i in range(n):
                        mask = np.zeros((size, size), np.uint8)
                        for _ in range(rng.integers(2, 6)):
                            cy, cx, r = *rng.integers(8, size - 8, 2), rng.integers(5, 14)
                            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
                        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                        image[mask == 1] += np.array([150, 90, 170], np.uint8)
                        PILImage.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
                        PILImage.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
                (root / "labels.txt").write_text("background\\nnucleus\\n")
                return root


            def first_of_each_split(folder, target, count):
                """A copy of ``folder`` with the first ``count`` image/mask pairs of each split."""
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                if (folder / "labels.txt").is_file():
                    shutil.copy(folder / "labels.txt", target)
                splits = [d for d in ("train", "val", "test") if (folder / d / "images").is_dir()] or [""]
                for split in splits:
                    for sub in ("images", "masks"):
                        (target / split / sub).mkdir(parents=True)
                    for image in sorted((folder / split / "images").iterdir())[:count]:
                        shutil.copy(image, target / split / "images")
                        for mask in (folder / split / "masks").glob(image.stem + ".*"):
                            shutil.copy(mask, target / split / "masks")
                return target


            source = locate(DATA)
            if source is None:
                print(f"{DATA} is not here: writing a tiny synthetic set (bright discs on noise) instead")
                source = synthetic_blobs(WORK / "synthetic_blobs")
            if MAX_IMAGES:
                source = first_of_each_split(source, WORK / "subset", MAX_IMAGES)
            pairs = {split: sorted((source / split / "images").iterdir()) for split in ("train", "val", "test") if (source / split / "images").is_dir()}
            labels = (source / "labels.txt").read_text().split() if (source / "labels.txt").is_file() else None
            print(f"{source}: classes {labels}; " + ", ".join(f"{split} {len(files)}" for split, files in pairs.items()))


            def mask_of(image_path):
                return next((image_path.parent.parent / "masks").glob(image_path.stem + ".*"))


            def overlay(image, mask, colour=(255, 40, 40)):
                """The image with the pixels of class > 0 tinted."""
                mask = np.asarray(mask).reshape(np.shape(mask)[:2])  # MediaPipe's category mask is H x W x 1
                out = np.asarray(image.convert("RGB").resize((mask.shape[1], mask.shape[0])), np.float32)
                out[mask > 0] = 0.5 * out[mask > 0] + 0.5 * np.array(colour)
                return out.astype(np.uint8)


            def show(images, titles, columns=4):
                rows = -(-len(images) // columns)
                fig = Figure(figsize=(2.6 * columns, 2.8 * rows))
                for i, (image, title) in enumerate(zip(images, titles)):
                    ax = fig.add_subplot(rows, columns, i + 1)
                    ax.imshow(image)
                    ax.set_title(title, fontsize=8)
                    ax.axis("off")
                figure_png(fig)


            first = next(iter(pairs.values()))[:4]
            show([overlay(PILImage.open(p), np.asarray(PILImage.open(mask_of(p)))) for p in first], [p.name for p in first])
        '''),
        md("""
            ## Train in two phases

            Phase 1 trains the decoder on the frozen encoder (Adam, cosine); phase 2 unfreezes the
            encoder's non-BatchNorm layers at a 10x lower rate and is kept only when its best val
            mIoU beats phase 1's. Loss: pixel cross-entropy + (1 - soft Dice). Image and mask are
            augmented together (flips, zoom-in crops; nearest on the mask).
        """),
        code('''
            config = RunConfig(
                data=DataConfig(source=str(source), image_size=IMAGE_SIZE, batch_size=BATCH_SIZE),
                model=ModelConfig(task="segmentation", backbone=BACKBONE, weights=WEIGHTS),
                train=TrainConfig(phase1_epochs=PHASE1_EPOCHS, phase2_epochs=PHASE2_EPOCHS, verbose=2),
                output_dir=str(WORK / "runs"),
                seed=SEED,
            )
            result = train_model(config)
            run_dir = result.run_dir
            print("run directory:", run_dir)
            print({stage: f"{seconds:.1f} s" for stage, seconds in result.timings.items()})
        '''),
        md("""
            ## Metrics

            `metrics.json`: mIoU, pixel accuracy, IoU per class and, for two classes, Dice, on val and
            on the test split; `report.html` in the run folder shows the test images with true and
            predicted masks, worst first.
        """),
        code('''
            metrics = result.metrics
            final = metrics["final"]
            print(f"val mIoU {metrics['val']['miou']:.3f}; {metrics['final_split']} mIoU {final['miou']:.3f}, "
                  f"pixel accuracy {final['pixel_accuracy']:.3f}" + (f", Dice {final['dice']:.3f}" if "dice" in final else ""))
            display(markdown_table(["class", "IoU"], [[name, f"{iou:.3f}"] for name, iou in final["per_class_iou"].items()]))
        '''),
        md("""
            ## Export for MediaPipe's ImageSegmenter

            Each variant takes raw pixels (uint8 for int8) and returns per-class probabilities with
            an explicit background channel; labels are packed in with MediaPipe's own metadata
            writer. Every variant is checked on the test split: LiteRT's masks against Keras' (float
            within 1 mIoU point, int8 within `MAX_DROP`), then MediaPipe's `ImageSegmenter` within 1
            point of Keras. `allow_drop=True` writes the bundle even when a variant misses its gate.
        """),
        code('''
            from tlkeras import ExportOptions, export_run

            exported = export_run(run_dir, WORK / "export" / run_dir.name,
                                  ExportOptions(variants=EXPORT_VARIANTS, max_drop=MAX_DROP, allow_drop=True, overwrite=True,
                                                verify_web=VERIFY_WEB), progress=print)
            bundle = exported.bundle_dir
            variants = exported.metadata["variants"]
            display(markdown_table(
                ["variant", "KB", "LiteRT mIoU", "MediaPipe mIoU", "verified on"],
                [[name, f"{v['bytes'] / 1024:.0f}", f"{v['metrics']['miou']:.3f}",
                  f"{v['mediapipe']['miou']:.3f}" if "miou" in (v.get("mediapipe") or {}) else "not checked",
                  ", ".join(v["verified_on"])] for name, v in variants.items()],
            ))
            if exported.failed:
                print("missed their gate:", exported.failed)
            print("bundle:", bundle)
        '''),
        md("""
            ## Segment with MediaPipe

            The exported file in MediaPipe Tasks' `ImageSegmenter` (the same API on Android, iOS and
            the web) on a few test images: its category mask (left) against the true mask (right).
        """),
        code('''
            model_file = bundle / variants[EXPORT_VARIANTS[-1]]["file"]
            tests = (pairs.get("test") or pairs.get("val") or next(iter(pairs.values())))[:3]
            try:
                import mediapipe as mp
                from mediapipe.tasks.python import BaseOptions, vision

                segmenter = vision.ImageSegmenter.create_from_options(vision.ImageSegmenterOptions(
                    base_options=BaseOptions(model_asset_path=str(model_file)), output_category_mask=True))
                images, titles = [], []
                for path in tests:
                    predicted = segmenter.segment(mp.Image.create_from_file(str(path))).category_mask.numpy_view()
                    truth = np.asarray(PILImage.open(mask_of(path)))
                    images += [overlay(PILImage.open(path), predicted), overlay(PILImage.open(path), truth, (40, 200, 40))]
                    titles += [f"{model_file.name}: {int((predicted > 0).sum())} px", "true mask"]
                print(f"MediaPipe ImageSegmenter ran {model_file.name} on {len(tests)} images")
                show(images, titles, columns=2)
            except ImportError:
                print("pip install mediapipe to run the ImageSegmenter here; the .tflite carries its labels")
        '''),
        md("""
            From a terminal: `python -m tlkeras.train --data ../shared/data/nuclei --weights <weights.h5>`,
            `python -m tlkeras.evaluate runs/<name>` and `python -m tlkeras.export runs/<name>`.
        """),
    ])


NOTEBOOKS = {
    "01_quickstart.ipynb": (quickstart, "images to a two-phase fine-tuned model, evaluation, int8 export, a LiteRT prediction"),
    "02_hyperparameter_search.ipynb": (hyperparameter_search, "a KerasTuner search, the trials table and plot, retraining the best"),
    "03_compress_and_export.ipynb": (compress_and_export, "pruning, QAT and PQAT, export of every model, benchmark table and size-vs-accuracy plot"),
    "04_tfhub_backbone.ipynb": (tfhub_backbone, "the quickstart flow with a TF-Hub (Kaggle Models) backbone"),
    "05_text_classifier.ipynb": (text_classifier, "a TF-Hub BERT (or word vectors offline) fine-tuned on sentences, exported and checked in MediaPipe's TextClassifier"),
    "06_object_detection.ipynb": (object_detection, "BCCD blood cells to an SSD-style detector, COCO metrics, float/int8 export checked in MediaPipe's ObjectDetector, drawn detections"),
    "07_segmentation.ipynb": (segmentation, "nuclei images and masks to a U-Net-lite segmenter, mIoU per class, export checked in MediaPipe's ImageSegmenter, drawn masks"),
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
        "`06` (object detection) and `07` (segmentation) read the BCCD and nuclei fixtures from",
        "`../shared/data` of a checkout (`DATA`); without them they write a tiny synthetic set, so they",
        "run anywhere. Offline, point their `WEIGHTS` at `mobilenet_v2_1.0_224_imagenet_no_top.h5`.",
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
