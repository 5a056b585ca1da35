"""Knowledge distillation: the loss on hand-made examples, and a student that trains and exports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlkeras._backend import keras, tf
from tlkeras.distill.distillation import DistillOptions, distill, distillation_loss, soft_target_loss, student_config
from tlkeras.errors import TLKerasError


def test_soft_target_loss_on_hand_made_examples():
    # T = 2: teacher logits (2, 0) soften to softmax(1, 0) = (p, 1 - p) with p = e / (e + 1);
    # the student's (0, 0) gives (1/2, 1/2). T^2 * KL = 4 * (p ln 2p + (1 - p) ln 2(1 - p)).
    value = soft_target_loss(tf.constant([[2.0, 0.0]]), tf.constant([[0.0, 0.0]]), 2.0).numpy()
    assert value == pytest.approx([0.4437763], abs=1e-6)
    # T = 1, three classes: KL(softmax(1, 2, 3) || softmax(3, 2, 1)) = 1.1504208.
    value = soft_target_loss(tf.constant([[1.0, 2.0, 3.0]]), tf.constant([[3.0, 2.0, 1.0]]), 1.0).numpy()
    assert value == pytest.approx([1.1504208], abs=1e-6)
    # Identical logits: nothing to learn, at any temperature.
    same = tf.constant([[0.3, -1.2, 2.0], [5.0, 0.0, 0.0]])
    np.testing.assert_allclose(soft_target_loss(same, same, 3.0).numpy(), 0.0, atol=1e-6)


def test_temperature_one_and_weight_zero_is_plain_cross_entropy():
    rng = np.random.default_rng(0)
    student = rng.normal(size=(6, 4)).astype(np.float32)
    teacher = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)]
    ce = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")(y, student).numpy()
    np.testing.assert_allclose(distillation_loss(y, teacher, student, 1.0, 0.0).numpy(), ce, rtol=1e-5)
    # The weight mixes the two terms linearly.
    soft = soft_target_loss(teacher, student, 2.0).numpy()
    np.testing.assert_allclose(distillation_loss(y, teacher, student, 2.0, 0.25).numpy(), 0.75 * ce + 0.25 * soft, rtol=1e-5)
    # The teacher gets no gradient.
    t = tf.Variable(teacher)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(distillation_loss(y, t, student, 2.0, 1.0))
    assert tape.gradient(loss, t) is None


def test_mixup_makes_convex_pairs_of_images_and_labels():
    from tlkeras.distill.distillation import _Distiller

    with pytest.raises(TLKerasError, match="mixup"):
        DistillOptions(mixup=-0.5).validate()
    tf.random.set_seed(0)
    distiller = _Distiller(None, None, None, DistillOptions(mixup=0.4))
    # Each image is constant (its value = its class), so a mixed image reveals its two parents.
    x = tf.constant(np.arange(8, dtype=np.float32)[:, None, None, None] * np.ones((8, 2, 2, 3), np.float32))
    y = tf.one_hot(np.arange(8), 8)
    xm, ym = (t.numpy() for t in distiller._mix(x, y))
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    # The label weights are the image weights: pixel value = sum of class * weight.
    np.testing.assert_allclose(xm[:, 0, 0, 0], ym @ np.arange(8), rtol=1e-5)
    assert (ym > 0).sum(axis=1).max() <= 2  # at most two parents per mixed image


def test_the_phase1_probe_is_logistic_regression_without_teacher_and_copies_a_linear_teacher():
    from sklearn.linear_model import LogisticRegression

    from tlkeras.distill.distillation import fit_distillation_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int) + (x[:, 1] > 0.8)
    teacher = x @ rng.normal(size=(6, 3)) + rng.normal(size=3)
    # Soft weight 0: scikit-learn's multinomial logistic regression with the same C.
    W, b = fit_distillation_probe(x, teacher, y, 3, DistillOptions(4.0, 0.0), l2_c=0.5)
    reference = LogisticRegression(C=0.5, max_iter=5000, tol=1e-8).fit(x, y)
    ours = tf.nn.softmax(x @ W + b).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x), atol=2e-3)
    # Soft weight 1, T = 1, almost no L2: the student reproduces a teacher that is linear in x.
    W, b = fit_distillation_probe(x, teacher, y, 3, DistillOptions(1.0, 1.0), l2_c=1e6)
    np.testing.assert_allclose(tf.nn.softmax(x @ W + b).numpy(), tf.nn.softmax(teacher).numpy(), atol=2e-3)
    before = soft_target_loss(teacher, np.zeros_like(teacher), 1.0).numpy().mean()
    after = soft_target_loss(teacher, x @ W + b, 1.0).numpy().mean()
    assert after < 0.01 * before


def test_student_trains_from_the_teacher_and_exports(tiny_run, tmp_path, capsys):
    from tlkeras.config import load_config
    from tlkeras.distill.__main__ import main
    from tlkeras.evaluate.run import evaluate_run
    from tlkeras.export.bundle import ExportOptions, export_run

    # A narrower student (alpha 0.125 from scratch) than the teacher (alpha 0.25, 32 px).
    code = main([str(tiny_run), "--alpha", "0.125", "--weights", "none", "--phase1-epochs", "3", "--phase2-epochs", "1",
                 "--unfreeze", "blocks:1", "--temperature", "2", "--soft-weight", "0.8", "--output-dir", str(tmp_path / "runs"),
                 "--seed", "5"])
    assert code == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / f"{tiny_run.name}-student-32px-a0.125"
    assert f"run directory: {run}" in out
    for name in ("config.yaml", "model.keras", "labels.txt", "metrics.json", "history.json", "run.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    d = metrics["distillation"]
    assert d["student_params"] < d["teacher_params"]
    assert d["temperature"] == 2.0 and d["soft_weight"] == 0.8 and d["teacher_run"] == str(tiny_run)
    assert (run / "labels.txt").read_text() == (tiny_run / "labels.txt").read_text()
    # Another training seed, but the teacher's split: the student is tested on the teacher's test images.
    teacher_config, student_config = load_config(tiny_run / "config.yaml"), load_config(run / "config.yaml")
    assert student_config.seed == 5 != teacher_config.seed
    assert student_config.data.split_seed == teacher_config.seed
    assert metrics["final"]["count"] == json.loads((tiny_run / "metrics.json").read_text())["final"]["count"]
    history = json.loads((run / "history.json").read_text())
    assert history["phase"] == [1, 2]  # phase 1: the distillation probe on cached features
    assert history["probe_C"][0] > 0 and history["soft_loss"][1] is not None
    # The student is an ordinary run: evaluate and export take it.
    evaluated = evaluate_run(run, write=False)
    assert evaluated["final"]["accuracy"] == pytest.approx(metrics["final"]["accuracy"])
    result = export_run(run, tmp_path / "bundle", ExportOptions(variants=("float32",), micro=False))
    assert result.metadata["variants"]["float32"]["metrics"]["agreement"] == 1.0
    assert result.metadata["task"]["class_names"] == (tiny_run / "labels.txt").read_text().split()


def test_bad_inputs_get_clear_errors(tiny_run, tmp_path):
    from tlkeras.config import load_config

    with pytest.raises(TLKerasError, match="temperature"):
        DistillOptions(temperature=0).validate()
    with pytest.raises(TLKerasError, match="soft_weight"):
        DistillOptions(soft_weight=1.5).validate()
    with pytest.raises(TLKerasError, match="not a run directory"):
        distill(tmp_path / "missing")
    config = student_config(load_config(tiny_run / "config.yaml"), output_dir=str(tmp_path), name="s")
    config.model.head = "sigmoid"
    with pytest.raises(TLKerasError, match="softmax"):
        distill(tiny_run, config)
    config.model.head = "softmax"
    config.data.image_size = 16
    with pytest.raises(TLKerasError, match="at least 32x32"):
        distill(tiny_run, config)
    from tlkeras.distill.__main__ import main

    assert main([str(tmp_path / "nope")]) == 2
