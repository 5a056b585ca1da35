"""Stage 2: training. ``engine`` holds the phase runner and the two-phase recipe every technique
extends; ``demo`` is the embedded offline demo; ``python -m tlkeras.train`` is ``__main__``.
"""
