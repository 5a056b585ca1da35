"""Know your data before training: exact and near duplicates, train/val/test leakage, likely label
errors, outliers and the basic facts of an image set (class balance, sizes, formats, grayscale and
alpha images, unreadable files).

``python -m tlkeras.audit DATA`` and :func:`tlkeras.audit_data` read the data the way
``tlkeras.train`` does and write ``audit.json``, ``audit.md`` and a self-contained ``audit.html``
into a report folder; ``--write-clean FILE.csv`` writes the data without the flagged items. The
audit never moves, renames or deletes an image.
"""
