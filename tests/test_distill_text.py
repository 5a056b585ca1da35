"""Distillation of a text teacher into the word-model student (python -m tlkeras.distill RUN --student word_embedding)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from text_fixtures import make_sentences, tiny_vectors, write_csv


@pytest.fixture(scope="module")
def text_teacher(tmp_path_factory):
    """A tiny word-model teacher trained on the sentence fixture (80 sentences, 2 classes)."""
    from tlkeras.train import __main__ as train_cli

    d = tmp_path_factory.mktemp("distill_text")
    rows = make_sentences()
    csv = write_csv(d / "reviews.csv", rows)
    vectors = tiny_vectors(d / "vectors.txt")
    code = train_cli.main(["--data", str(csv), "--word-vectors", str(vectors), "--sequence-length", "16", "--ngram-buckets", "512",
                           "--phase2-epochs", "4", "--verbose", "0", "--output-dir", str(d / "runs"), "--name", "teacher"])
    assert code == 0
    # Unlabelled texts: the fixture's sentences under a new seed (the teacher labels them).
    unlabelled = d / "unlabelled.txt"
    unlabelled.write_text("\n".join(t for t, _ in make_sentences(n_per_class=10, seed=7)) + "\n\n", encoding="utf-8")
    return {"d": d, "run": d / "runs" / "teacher", "unlabelled": unlabelled, "rows": rows}


@pytest.fixture(scope="module")
def text_student(text_teacher):
    from tlkeras.distill.__main__ import main

    code = main([str(text_teacher["run"]), "--student", "word_embedding", "--ngram-buckets", "256", "--unlabelled",
                 str(text_teacher["unlabelled"]), "--phase2-epochs", "4", "--quiet", "--output-dir", str(text_teacher["d"] / "runs")])
    assert code == 0
    return text_teacher["d"] / "runs" / "teacher-student-word_embedding"


def test_the_student_run_is_written_predicts_and_agrees_with_its_teacher(text_teacher, text_student):
    from tlkeras._backend import tf
    from tlkeras.config import load_config
    from tlkeras.core.loading import load_run_model

    for name in ("config.yaml", "model.keras", "labels.txt", "metrics.json", "run.json"):
        assert (text_student / name).is_file(), name
    cfg = load_config(text_student / "config.yaml")
    assert cfg.data.modality == "text" and cfg.model.backbone == "word_embedding" and cfg.model.ngram_buckets == 256
    metrics = json.loads((text_student / "metrics.json").read_text())
    d = metrics["distillation"]
    assert d["modality"] == "text" and d["unlabelled_texts"] == 20 and d["train_agreement"] >= 0.8
    # The reloaded student predicts raw strings, and agrees with the teacher on most training texts.
    student, teacher = load_run_model(text_student), load_run_model(text_teacher["run"])
    texts = tf.constant([t for i, (t, _) in enumerate(text_teacher["rows"]) if i % 5 > 1])
    s, t = student.predict(texts, verbose=0), teacher.predict(texts, verbose=0)
    assert s.shape == t.shape == (len(texts), 2)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-4)
    assert np.mean(s.argmax(1) == t.argmax(1)) >= 0.8
    assert np.mean(s.argmax(1) == t.argmax(1)) == pytest.approx(d["train_agreement"], abs=1e-6)


def test_the_student_exports_to_a_mediapipe_text_classifier(text_teacher, text_student):
    pytest.importorskip("mediapipe")
    from tlkeras.export import __main__ as export_cli

    target = text_teacher["d"] / "bundle"
    assert export_cli.main([str(text_student), "--output-dir", str(target), "--quiet"]) == 0
    assert list(target.rglob("*.tflite"))


def test_bad_pairs_are_one_line_exit_2(text_teacher, tiny_run, tmp_path, capsys):
    from tlkeras.distill.__main__ import main

    cases = [
        ([str(text_teacher["run"]), "--backbone", "mobilenet_v2"], "word_embedding"),  # a text teacher, an image student
        ([str(tiny_run), "--student", "word_embedding"], "text teacher"),  # an image teacher, a text student
        ([str(text_teacher["run"]), "--unlabelled", str(tmp_path / "none.txt")], "does not exist"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv + ["--output-dir", str(tmp_path), "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # no half-written student
