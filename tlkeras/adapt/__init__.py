"""Stage 3 techniques with unlabelled images: domain adaptation (DANN, MMD, importance weighting),
semi-supervised (pseudo-labels, FixMatch) and self-supervised (SimCLR) learning, one file each
(``python -m tlkeras.adapt``).
"""
