"""How often each property's guarded condition was met: a property whose condition holds in a handful of
examples checks almost nothing. `met(name, holds)` counts and returns `holds`; the test session prints the counts
(tests/conftest.py), and with REGENT_REQUIRE_CONDITIONS=1 (scripts/test) fails when one was met fewer than
MIN_MET times in a run of the property tests."""

from __future__ import annotations

from collections import Counter

MIN_MET = 100
MET: Counter[str] = Counter()
SEEN: set[str] = set()


def met(condition: str, holds: bool) -> bool:
    SEEN.add(condition)
    if holds:
        MET[condition] += 1
    return holds


def below_minimum() -> list[tuple[str, int]]:
    return sorted((name, MET[name]) for name in SEEN if MET[name] < MIN_MET)
