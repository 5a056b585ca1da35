"""Few-shot prototypes: construction, adding classes, persistence, TFLite agreement, episodes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

from tlkeras.errors import TLKerasError
from tlkeras.heads.fewshot import FewShotClassifier, PrototypeClassifier, evaluate_episodes, export_fewshot, mean_interval, sample_episodes


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_prototype_of_identical_embeddings_classifies_them(metric):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(4, 16)).astype(np.float32)  # one point per class, 5 identical shots each
    x = np.repeat(points, 5, axis=0)
    y = np.repeat(np.arange(4), 5)
    clf = PrototypeClassifier.fit(x, y, ["a", "b", "c", "d"], metric=metric)
    expected = points / np.linalg.norm(points, axis=1, keepdims=True) if metric == "cosine" else points
    np.testing.assert_allclose(clf.prototypes, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(points), np.arange(4))
    np.testing.assert_array_equal(clf.predict(x), y)
    probs = clf.predict_proba(points)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(probs.argmax(axis=1) == np.arange(4))


def test_adding_a_class_changes_no_other_prototype():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 8))
    y = np.repeat(np.arange(3), 5)
    for center in (False, True):
        clf = PrototypeClassifier.fit(x, y, ["a", "b", "c"], center=center)
        before = clf.prototypes.copy()
        new = rng.normal(loc=3.0, size=(5, 8))
        assert clf.add_class("d", new) == 3
        np.testing.assert_array_equal(clf.prototypes[:3], before)
        assert clf.class_names == ["a", "b", "c", "d"]
        assert np.all(clf.predict(new) == 3)  # the new class's own shots land in it
        clf.add_examples("a", x[:5])  # refining one class leaves the others alone
        np.testing.assert_array_equal(clf.prototypes[1:3], before[1:3])
        assert clf.counts.tolist() == [10, 5, 5, 5]
    with pytest.raises(TLKerasError, match="already exists"):
        clf.add_class("a", new)
    with pytest.raises(TLKerasError, match="dimensions"):
        clf.add_class("e", np.zeros((2, 7)))
    with pytest.raises(TLKerasError, match="no support examples"):
        PrototypeClassifier.fit(x[:10], y[:10], ["a", "b", "c"])


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    clf = PrototypeClassifier.fit(rng.normal(size=(6, 5)), [0, 0, 1, 1, 2, 2], ["x", "y", "z"], metric="euclidean", center=True)
    clf.save(tmp_path / "p.npz")
    again = PrototypeClassifier.load(tmp_path / "p.npz")
    probe = rng.normal(size=(7, 5))
    np.testing.assert_allclose(again.scores(probe), clf.scores(probe), rtol=1e-6)
    assert again.class_names == clf.class_names and again.metric == "euclidean"
    with pytest.raises(TLKerasError, match="not a tlkeras prototype file"):
        (tmp_path / "bad.npz").write_bytes(b"nope")
        PrototypeClassifier.load(tmp_path / "bad.npz")


def test_episodes_and_interval():
    labels = np.repeat(np.arange(6), 8)
    episodes = list(sample_episodes(labels, n_way=3, k_shot=2, n_query=3, episodes=5, seed=0))
    assert len(episodes) == 5
    for s, sy, q, qy in episodes:
        assert len(set(s) & set(q)) == 0 and len(s) == 6 and len(q) == 9
        for new in range(3):  # each renumbered class maps to one original class
            assert len(set(labels[s[sy == new]]) | set(labels[q[qy == new]])) == 1
    # Perfectly separated embeddings: every episode is solved.
    emb = np.eye(6)[labels] + 0.01 * np.random.default_rng(0).normal(size=(48, 6))
    result = evaluate_episodes(emb, labels, n_way=3, k_shot=2, n_query=3, episodes=20,
                               baselines={"first_class": lambda sx, sy, qx: np.zeros(len(qx), int)})
    assert result["prototypes"]["mean"] == 1.0
    assert result["first_class"]["mean"] == pytest.approx(1 / 3)
    mean, half = mean_interval([0.0, 1.0] * 50)
    assert mean == 0.5 and half == pytest.approx(1.96 * np.std([0.0, 1.0] * 50, ddof=1) / 10)
    with pytest.raises(TLKerasError, match="5-way episodes need 5"):
        next(sample_episodes(labels[:16], n_way=5, k_shot=2, n_query=2))


def test_images_add_a_class_and_the_tflite_model_agrees_with_python(tmp_path):
    from tlkeras.core import litert
    from tlkeras.core.data import DataConfig, load_data

    folder = make_image_folder(tmp_path / "images", classes=("red", "green", "blue", "yellow"), per_class=8, size=32)
    bundle = load_data(DataConfig(source=str(folder), val_fraction=0.25, test_fraction=0.0), 32)
    known = bundle.train.y < 3
    fewshot = FewShotClassifier.from_backbone(tiny_config().model, 32)
    fewshot.fit(bundle.train.x[known], bundle.train.y[known], bundle.class_names[:3])
    before = fewshot.classifier.prototypes.copy()
    fewshot.add_class("yellow", bundle.train.x[~known][:5])
    np.testing.assert_array_equal(fewshot.classifier.prototypes[:3], before)
    assert fewshot.class_names == ["blue", "green", "red", "yellow"]
    query = bundle.val.x
    python_probs = fewshot.predict_proba(query)
    keras_probs = fewshot.to_keras().predict(query.astype(np.float32), verbose=0)
    np.testing.assert_allclose(keras_probs, python_probs, atol=1e-4)
    result = export_fewshot(fewshot, bundle.train.x, bundle.train.y, tmp_path / "bundle", eval_images=query, eval_labels=bundle.val.y)
    lite = litert.run_model(result.variant_path("float32"), query)
    np.testing.assert_allclose(lite, python_probs, atol=1e-4)
    assert np.array_equal(lite.argmax(1), fewshot.predict(query))
    assert result.metadata["task"]["class_names"] == fewshot.class_names
    # Saved and reloaded, the classifier (prototypes, extractor) gives the same probabilities.
    fewshot.save(tmp_path / "saved")
    again = FewShotClassifier.load(tmp_path / "saved")
    np.testing.assert_allclose(again.predict_proba(query), python_probs, atol=1e-5)
    again.add_class("purple", query[:2])  # still extensible after loading
    assert again.class_names[-1] == "purple"
    with pytest.raises(TLKerasError, match="backbone takes"):
        fewshot.predict(np.zeros((2, 40, 40, 3), np.uint8))
