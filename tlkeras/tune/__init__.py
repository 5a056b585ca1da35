"""Stage 4: hyperparameter search with KerasTuner over the whole recipe (``python -m tlkeras.tune``)."""
