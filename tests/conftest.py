"""Hypothesis profiles: `ci` (the default, the whole suite in minutes) and `thorough` for long hunts:
REGENT_HYPOTHESIS_PROFILE=thorough pytest tests/property"""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=300, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("REGENT_HYPOTHESIS_PROFILE", "ci"))
