"""Shared test set-up: hypothesis profiles, and the rule-coverage report.

Profiles: `ci` (the default: derandomized, so CI is repeatable) and `thorough` (random, long hunts):
REGENT_HYPOTHESIS_PROFILE=thorough pytest tests/property

Rule coverage: every decision any test takes is counted by the rule that fired, apart for the behavioural runs
(simulator, scenario scripts, properties, explorer, agents on real servers in this process) and for the unit
tests that build one observation per row (UNIT_MODULES: they fire every row by construction). The terminal
summary reports both. With REGENT_REQUIRE_RULE_COVERAGE=1 (scripts/test sets it) a row that no behavioural run
fired fails the run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import settings

import fsm.decision
from fsm.transitions import RULES
from tests.property import conditions
from tests.servers.postgres import PgNodes

settings.register_profile("ci", max_examples=300, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("mutation", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=20_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("REGENT_HYPOTHESIS_PROFILE", "ci"))

# Tests that hand decide() one made-up observation per row or behaviour: they fire rows by construction.
UNIT_MODULES = {
    "tests.test_rules",
    "tests.test_decide",
    "tests.test_wellformed",
    "tests.test_golden",
    "tests.test_node",
}

FIRED: Counter[str] = Counter()  # behavioural runs
FIRED_BY_UNIT_TESTS: Counter[str] = Counter()
_counter = FIRED
_fire = fsm.decision.fire


def _counting_fire(*args, **kwargs):  # type: ignore[no-untyped-def]
    state, rule = _fire(*args, **kwargs)
    _counter[rule.name] += 1
    return state, rule


fsm.decision.fire = _counting_fire


def pytest_runtest_setup(item: pytest.Item) -> None:
    global _counter
    module = getattr(item, "module", None)
    _counter = FIRED_BY_UNIT_TESTS if module is not None and module.__name__ in UNIT_MODULES else FIRED


def unfired_rules(counter: Counter[str] = FIRED) -> list[str]:
    return [row.name for row in RULES if not counter[row.name]]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (FIRED or FIRED_BY_UNIT_TESTS) and not os.environ.get("REGENT_REQUIRE_RULE_COVERAGE"):
        return  # a run of tests that take no decision (adapters, config) has no coverage to report
    missing = unfired_rules()
    fired = len(RULES) - len(missing)
    terminalreporter.write_line(
        f"rule coverage (behavioural runs): {fired}/{len(RULES)} rows of the rule table fired "
        f"({sum(FIRED.values())} decisions); unit tests fired "
        f"{len(RULES) - len(unfired_rules(FIRED_BY_UNIT_TESTS))}/{len(RULES)}"
    )
    rare = sorted((count, name) for name, count in FIRED.items())[:5]
    terminalreporter.write_line("least fired: " + ", ".join(f"{name} {count}" for count, name in rare))
    if missing:
        terminalreporter.write_line(f"rows no behavioural run fired: {', '.join(missing)}")
    if conditions.SEEN:
        counts = ", ".join(f"{name} {conditions.MET[name]}" for name in sorted(conditions.SEEN))
        terminalreporter.write_line(f"property conditions met (at least {conditions.MIN_MET} each): {counts}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("REGENT_REQUIRE_RULE_COVERAGE") and unfired_rules() and exitstatus == 0:
        session.exitstatus = 1
    if os.environ.get("REGENT_REQUIRE_CONDITIONS") and conditions.below_minimum() and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture
def nodes() -> Iterator[PgNodes]:
    """Real PostgreSQL 15 nodes in a scratch directory, run as an unprivileged OS user; all stopped afterwards."""
    with PgNodes() as made:
        yield made
