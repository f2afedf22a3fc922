"""Shared test set-up: hypothesis profiles, and the rule-coverage report.

Profiles: `ci` (the default: derandomized, so CI is repeatable) and `thorough` (random, long hunts):
REGENT_HYPOTHESIS_PROFILE=thorough pytest tests/property

Rule coverage: every decision any test takes is counted by the rule that fired; the terminal summary reports
which rows of the table the suite exercised. With REGENT_REQUIRE_RULE_COVERAGE=1 (scripts/test sets it) a row
that no test fired fails the run.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import settings

import fsm.decision
from fsm.transitions import RULES

settings.register_profile("ci", max_examples=300, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("thorough", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("REGENT_HYPOTHESIS_PROFILE", "ci"))

FIRED: Counter[str] = Counter()
_fire = fsm.decision.fire


def _counting_fire(*args, **kwargs):  # type: ignore[no-untyped-def]
    state, rule = _fire(*args, **kwargs)
    FIRED[rule.name] += 1
    return state, rule


fsm.decision.fire = _counting_fire


def unfired_rules() -> list[str]:
    return [row.name for row in RULES if not FIRED[row.name]]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIRED and not os.environ.get("REGENT_REQUIRE_RULE_COVERAGE"):
        return  # a run of tests that take no decision (adapters, config) has no coverage to report
    missing = unfired_rules()
    fired = len(RULES) - len(missing)
    terminalreporter.write_line(
        f"rule coverage: {fired}/{len(RULES)} rows of the rule table fired ({sum(FIRED.values())} decisions)"
    )
    rare = sorted((count, name) for name, count in FIRED.items())[:5]
    terminalreporter.write_line("least fired: " + ", ".join(f"{name} {count}" for count, name in rare))
    if missing:
        terminalreporter.write_line(f"rows no test fired: {', '.join(missing)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("REGENT_REQUIRE_RULE_COVERAGE") and unfired_rules() and exitstatus == 0:
        session.exitstatus = 1
