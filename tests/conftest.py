"""Hypothesis profiles: `ci` (the default: derandomized, so CI is repeatable) and `thorough` (random, long hunts):
REGENT_HYPOTHESIS_PROFILE=thorough pytest tests/property"""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=300, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("thorough", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("REGENT_HYPOTHESIS_PROFILE", "ci"))
