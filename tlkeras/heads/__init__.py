"""Stage 3 techniques that change the head: multi-task heads and few-shot prototype classifiers."""
