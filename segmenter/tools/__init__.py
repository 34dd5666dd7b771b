"""Measurements behind the numbers in docs/: each has a thin entry script in scripts/."""
