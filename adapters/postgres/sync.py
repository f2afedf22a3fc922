"""Waiting for a change of synchronous_standby_names to take effect: a reload only signals the postmaster, so the
callers poll what new sessions see (the setting) or what the primary reports of the standby (its sync state)."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import observe as facts
from .sql import Sql, SqlError

POLL_S = 0.02


def poll(check: Callable[[], tuple[bool, str]], timeout_s: float) -> tuple[bool, str]:
    """Call `check` every POLL_S until it reports done or `timeout_s` has passed: whether it did, and what it said
    last. A SqlError from `check` propagates."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok, said = check()
        if ok or time.monotonic() > deadline:
            return ok, said
        time.sleep(POLL_S)


def names_shown(sql: Sql, expected: frozenset[str]) -> tuple[bool, str]:
    """Whether a new session sees synchronous_standby_names naming exactly `expected`; else what it shows."""
    shown = sql.one("SHOW synchronous_standby_names")[0]
    try:
        return facts.parse_standby_names(shown) == expected, f"still {shown!r}"
    except ValueError as error:
        return False, str(error)


def reported_sync(sql: Sql, name: str) -> tuple[bool, str]:
    """Whether pg_stat_replication reports `name` as the synchronous standby; else its states (a SqlError is what
    it says: the caller keeps polling)."""
    try:
        rows = sql.rows(
            "SELECT state, sync_state FROM pg_stat_replication WHERE lower(application_name) = lower(%s)", (name,)
        )
    except SqlError as error:
        return False, str(error)
    if any(sync == "sync" for _, sync in rows):
        return True, ""
    return False, f"{name} is " + (", ".join(f"{state}/{sync}" for state, sync in rows) or "not connected")


def names_cleared(sql: Sql) -> tuple[bool, str]:
    """Whether a new session sees synchronous_standby_names empty (a SqlError: not yet)."""
    try:
        shown = sql.one("SHOW synchronous_standby_names")[0]
    except SqlError as error:
        return False, str(error)
    return shown == "", f"synchronous_standby_names still {shown!r}"
