"""The task registry: the classification family as task objects, ``task`` with ``head`` as its alias,
and run folders written before tasks existed still evaluate and export."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from tlkeras.config import RunConfig, config_from_dict, load_config, save_config
from tlkeras.core.tasks import Task, get_task, register_task, task_for_data, task_names, task_of, task_of_head
from tlkeras.errors import TLKerasError

LEGACY_RUN = Path(__file__).parent / "fixtures" / "run_0.1.0"  # written by tlkeras at 61b5460 (head: softmax)


@pytest.mark.parametrize("task,head", [("classification", "softmax"), ("multilabel", "sigmoid"), ("regression", "regression")])
def test_task_and_head_name_the_same_thing(task, head, tmp_path):
    by_task = config_from_dict({"model": {"task": task}})
    by_head = config_from_dict({"model": {"head": head}})
    assert by_task.model.head == by_head.model.head == head
    assert task_of(by_task.model) is task_of(by_head.model) is get_task(task)
    assert get_task(task).head == head
    # Written and read back, the config keeps its task.
    save_config(by_task, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").model.task_name == task


def test_an_unknown_task_is_one_line():
    config = config_from_dict({"model": {"task": "Telepathy"}})
    assert config.model.task == "telepathy"
    with pytest.raises(TLKerasError, match="unknown task 'telepathy'; choose one of .*classification"):
        task_of(config.model)
    with pytest.raises(TLKerasError, match="not a task name"):
        config_from_dict({"model": {"task": "../../x"}})


def test_the_train_cli_refuses_an_unknown_task_in_one_line(tmp_path):
    folder = make_image_folder(tmp_path / "d", per_class=3, size=32)
    out = subprocess.run([sys.executable, "-m", "tlkeras.train", "--data", str(folder), "--task", "nope", "--output-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "unknown task 'nope'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_classification_family_metrics_and_agreement():
    y = np.array([0, 1, 2, 1])
    out = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.4, 0.3]], np.float32)
    c = get_task("classification")
    m = c.metrics(y, out, ["a", "b", "c"])
    assert m[c.primary_metric] == pytest.approx(0.75) and m["confusion_matrix"][2] == [0, 1, 0]
    assert c.agreement(out, out[::-1]) == pytest.approx(0.5)
    assert c.encode_labels(y, 3).sum(axis=1).tolist() == [1, 1, 1, 1]
    assert c.loss_value(y, out) == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 0.4])), rel=1e-5)
    ml = get_task("multilabel")
    tags = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.3]], np.float32)
    assert ml.metrics(tags, probs, ["x", "y"])["subset_accuracy"] == pytest.approx(2 / 3)
    assert ml.strata(tags).tolist() == [0, 1, 0]
    r = get_task("regression")
    assert r.metrics(np.array([1.0, 2.0]), np.array([[1.5], [2.0]]), ["t"])["mae"] == pytest.approx(0.25)
    assert r.agreement(probs, probs) is None and not r.higher_is_better


def test_csv_labels_per_task(tmp_path):
    with pytest.raises(TLKerasError, match="line 3 has an empty label"):
        get_task("classification").csv_labels(["a", ""], tmp_path / "x.csv", ";")
    labels, names, strata = get_task("multilabel").csv_labels(["a;b", "", "b"], tmp_path / "x.csv", ";")
    assert names == ["a", "b"] and labels.tolist() == [[1, 1], [0, 0], [0, 1]] and strata is None
    with pytest.raises(TLKerasError, match="numeric labels"):
        get_task("regression").csv_labels(["1.5", "tall"], tmp_path / "x.csv", ";")


def test_a_technique_that_does_not_support_a_task_says_so():
    class Counting(Task):
        name = "counting"
        techniques = frozenset({"optimize"})

    register_task("counting", f"{__name__}:_Counting")
    try:
        globals()["_Counting"] = Counting
        assert "counting" in task_names()
        get_task("counting").check_technique("optimize")
        with pytest.raises(TLKerasError, match="distill does not support the counting task"):
            get_task("counting").check_technique("distill")
    finally:
        from tlkeras.core.tasks import base

        base._FACTORIES.pop("counting", None)
        base._INSTANCES.pop("counting", None)


def test_a_dense_task_is_found_from_the_data_layout(tmp_path):
    """A task that owns its pipeline and recognises a folder is chosen when the config names none."""

    class Boxes(Task):
        name = "boxes_demo"
        owns_pipeline = True

        def recognises(self, source):
            return (Path(source) / "Annotations").is_dir()

    globals()["_Boxes"] = Boxes
    register_task("boxes_demo", f"{__name__}:_Boxes")
    try:
        (tmp_path / "voc" / "Annotations").mkdir(parents=True)
        config = RunConfig()
        assert task_for_data(config.model, str(tmp_path / "voc")).name == "boxes_demo"
        assert config.model.task == "boxes_demo"
        other = RunConfig()
        assert task_for_data(other.model, str(tmp_path)).name == "classification" and other.model.task is None
    finally:
        from tlkeras.core.tasks import base

        base._FACTORIES.pop("boxes_demo", None)
        base._INSTANCES.pop("boxes_demo", None)


def test_task_of_head_covers_the_old_names():
    assert [task_of_head(h).name for h in ("softmax", "sigmoid", "regression")] == ["classification", "multilabel", "regression"]


@pytest.mark.skipif(not LEGACY_RUN.is_dir(), reason="legacy run fixture missing")
def test_a_run_folder_from_before_tasks_still_loads_evaluates_and_exports(tmp_path):
    """tests/fixtures/run_0.1.0 was written by the release before the registry (config says head: softmax)."""
    from tlkeras.evaluate.run import evaluate_run
    from tlkeras.export.bundle import ExportOptions, export_run

    run = tmp_path / "run"
    shutil.copytree(LEGACY_RUN, run)
    config = load_config(run / "config.yaml")
    assert config.model.task is None and config.model.task_name == "classification"
    # The run's data folder is gone (it lived in a temporary folder): the same classes, made again.
    data = make_image_folder(tmp_path / "data", per_class=8, size=32)
    metrics = evaluate_run(run, data_source=str(data), split="val", write=True)
    assert 0.0 <= metrics["final"]["accuracy"] <= 1.0 and (run / "eval_metrics.json").is_file()
    result = export_run(run, tmp_path / "bundle", ExportOptions(variants=("float32",), verify_mediapipe=False, micro=False), data_source=str(data))
    assert (tmp_path / "bundle" / "metadata.json").is_file()
    assert result is not None
