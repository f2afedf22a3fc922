"""synchronous_standby_names, parsed, observed and prepared (issue 18).

The parser is checked against a table, and the same table against real PostgreSQL 15's own check of the setting
(ALTER SYSTEM validates a value before it writes it): whatever the server accepts the parser reads, whatever it
rejects the parser rejects. Then on a real primary and standby: the observation reports the running server's
effective setting and the standby pg_stat_replication holds in sync state; `prepare_synchronous_standby` on a stopped
server and on a running standby (a leader that went read-only in a DCS outage) sets it so that, once promoted, the
very first commit waits for the named standby.
"""

from __future__ import annotations

import psycopg2
import pytest

from adapters.postgres.files import NodeState
from adapters.postgres.observe import parse_standby_names
from adapters.postgres.server import Postgres
from tests.servers.common import wait_until
from tests.servers.postgres import PgNodes, primary_with_standbys, query, tcp, wait_for_value
from tests.test_postgres_sync import timed_insert

# (setting, the names it holds)
VALID: tuple[tuple[str, frozenset[str]], ...] = (
    ("", frozenset()),
    ("n0", frozenset({"n0"})),
    ("n0, n1", frozenset({"n0", "n1"})),
    ("  n0  ,\tn1  ", frozenset({"n0", "n1"})),
    ('"n0"', frozenset({"n0"})),
    ('"a""b"', frozenset({'a"b'})),
    ('"x y", "a,b"', frozenset({"x y", "a,b"})),
    ('""', frozenset({""})),
    ("*", frozenset({"*"})),
    ("n0, *", frozenset({"n0", "*"})),
    ("FIRST 1 (n0, n1)", frozenset({"n0", "n1"})),
    ('first 2(n0,"N1")', frozenset({"n0", "N1"})),
    ("ANY 1 (n0)", frozenset({"n0"})),
    ("any 2 (a, b, c)", frozenset({"a", "b", "c"})),
    ("ANY 10 (a)", frozenset({"a"})),
    ("ANY 1 (*)", frozenset({"*"})),
    ("2 (a, b)", frozenset({"a", "b"})),
    ("3 (a)", frozenset({"a"})),
    ('FIRST 1 ( "x y" , z )', frozenset({"x y", "z"})),
    ("1", frozenset({"1"})),
    ("1, 2", frozenset({"1", "2"})),
    ("0", frozenset({"0"})),
    ('"first"', frozenset({"first"})),
    ("firstly, Any1", frozenset({"firstly", "Any1"})),
    ("N0", frozenset({"N0"})),  # kept as written: Postgres matches application_name case-insensitively
    ("n$0", frozenset({"n$0"})),
    ("née", frozenset({"née"})),
    ("a, a", frozenset({"a"})),
)

INVALID: tuple[str, ...] = (
    " ",
    "n0 n1",
    "n0,",
    ",n0",
    "a,,b",
    "(n0)",
    "n0)",
    "n-0",
    "$n",
    "a'b",
    "1a",
    '"unterminated',
    "first",
    "any",
    "FIRST 1 (first)",
    "FIRST 1 n0",
    "FIRST (n0)",
    "FIRST 0 (n0)",
    "0 (a)",
    "ANY 1 ()",
    "FIRST 1 (a,)",
    "FIRST 1 (a) b",
    "ANY1(a)",
)


@pytest.mark.parametrize(("text", "names"), VALID, ids=[repr(text) for text, _ in VALID])
def test_parse_standby_names(text: str, names: frozenset[str]) -> None:
    assert parse_standby_names(text) == names


@pytest.mark.parametrize("text", INVALID, ids=[repr(text) for text in INVALID])
def test_parse_standby_names_rejects_what_postgres_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_standby_names(text)


def test_the_table_agrees_with_postgres_own_check(nodes: PgNodes) -> None:
    server = nodes.node("n0")
    assert server.bootstrap().ok and server.start_primary().ok
    conn = tcp(nodes.settings("n0"))
    verdicts = {}
    try:
        with conn.cursor() as cur:
            for text in [text for text, _ in VALID] + list(INVALID):
                try:
                    cur.execute("ALTER SYSTEM SET synchronous_standby_names = %s", (text,))
                    verdicts[text] = True
                except psycopg2.Error:
                    verdicts[text] = False
            cur.execute("ALTER SYSTEM RESET synchronous_standby_names")
    finally:
        conn.close()
    assert [text for text, _ in VALID if not verdicts[text]] == [], "Postgres rejects these"
    assert [text for text in INVALID if verdicts[text]] == [], "Postgres accepts these"


def test_observe_reports_the_setting_and_the_standby_in_sync_state(nodes: PgNodes) -> None:
    primary, (standby,) = primary_with_standbys(nodes, "n1")
    wait_until(lambda: primary.observe().streaming_replicas == {"n1"}, 10, "n1 streaming from n0")
    before = primary.observe()
    assert (before.synchronous_standby_names, before.sync_replicas) == (frozenset(), frozenset()), "async"

    assert primary.set_synchronous_standby("n1").ok
    seen = primary.observe()
    assert seen.synchronous_standby_names == {"n1"}
    assert seen.sync_replicas == {"n1"}
    on_standby = standby.observe()
    assert (on_standby.synchronous_standby_names, on_standby.sync_replicas) == (frozenset(), frozenset())

    assert standby.stop("fast").ok
    gone = primary.observe()
    assert gone.synchronous_standby_names == {"n1"}, "the setting stays; nobody acknowledges"
    assert gone.sync_replicas == frozenset()

    assert primary.stop("fast").ok
    stopped = primary.observe()
    assert not stopped.running
    assert (stopped.synchronous_standby_names, stopped.sync_replicas) == (frozenset(), frozenset())


def _read_only_leader(nodes: PgNodes) -> tuple[Postgres, Postgres]:
    """n0 led with n1 as its synchronous standby, then went read-only (a standby of nobody) as a leader does
    during a DCS outage: the restart left it without synchronous_standby_names."""
    primary, (standby,) = primary_with_standbys(nodes, "n1")
    query(primary.settings, "CREATE TABLE t (v text)")
    assert primary.set_synchronous_standby("n1").ok
    assert primary.demote("read-only").ok
    state = primary.observe()
    assert state.running and state.in_recovery and state.following is None
    assert state.synchronous_standby_names == frozenset(), "the read-only restart dropped the setting (the bug)"
    return primary, standby


def _commits_wait_for(nodes: PgNodes, primary: Postgres, standby: Postgres) -> None:
    """n0, now a writable primary, holds a commit until n1 has it: the commit made while n1 streams returns at
    once and is on n1; with n1 stopped a commit waits (SyncRep) until the client gives up."""
    wait_for_value(standby.settings, "before", timeout_s=10)  # n1 streams from the promoted n0 again

    def in_sync() -> bool:
        return primary.observe().sync_replicas == {"n1"}

    wait_until(in_sync, 10, "n1 in sync state on n0")
    elapsed, notices, _ = timed_insert(nodes, "first commit", cancel_after_s=2)
    assert not notices and elapsed < 2
    wait_for_value(standby.settings, "first commit", timeout_s=2)
    assert standby.stop("fast").ok
    elapsed, notices, waiting_for = timed_insert(nodes, "waits", cancel_after_s=0.5)
    assert waiting_for == ["SyncRep"] and elapsed >= 0.5, "the commit waited for the synchronous standby"
    assert any("canceling wait for synchronous replication" in notice for notice in notices), notices


def test_prepare_on_a_running_standby_then_promote(nodes: PgNodes) -> None:
    primary, standby = _read_only_leader(nodes)
    prepared = primary.prepare_synchronous_standby("n1")
    assert prepared.ok, prepared.detail
    assert "reloaded" in prepared.detail
    state = primary.observe()
    assert state.in_recovery and state.synchronous_standby_names == {"n1"}, "set on the standby, before promotion"
    assert primary.files.read_state().upstream is None, "the upstream (nobody) is kept"
    assert primary.promote().ok
    assert query(primary.settings, "SHOW synchronous_standby_names") == [('"n1"',)]
    query(primary.settings, "INSERT INTO t VALUES ('before')")
    _commits_wait_for(nodes, primary, standby)


def test_prepare_on_a_stopped_server_takes_effect_when_it_starts(nodes: PgNodes) -> None:
    primary, standby = _read_only_leader(nodes)
    assert primary.stop("fast").ok
    prepared = primary.prepare_synchronous_standby("n1")
    assert prepared.ok and "not running" in prepared.detail, prepared.detail
    assert primary.observe().synchronous_standby_names == frozenset(), "a stopped server reports nothing"
    assert primary.files.read_state().sync_standby == "n1"
    assert primary.start_primary().ok  # as it last ran: a standby of nobody
    state = primary.observe()
    assert state.in_recovery and state.synchronous_standby_names == {"n1"}
    assert primary.promote().ok
    assert primary.observe().synchronous_standby_names == {"n1"}
    query(primary.settings, "INSERT INTO t VALUES ('before')")
    _commits_wait_for(nodes, primary, standby)


def test_prepare_nobody_on_a_running_primary_clears_the_setting(nodes: PgNodes) -> None:
    primary, (standby,) = primary_with_standbys(nodes, "n1")
    query(primary.settings, "CREATE TABLE t (v text)")
    assert primary.set_synchronous_standby("n1").ok
    upstream_before = primary.files.read_state().upstream
    assert standby.stop("fast").ok
    prepared = primary.prepare_synchronous_standby(None)
    assert prepared.ok, prepared.detail
    assert primary.observe().synchronous_standby_names == frozenset()
    assert primary.files.read_state() == NodeState(upstream_before, None)
    elapsed, notices, _ = timed_insert(nodes, "nobody waits")
    assert elapsed < 0.4 and not notices
    again = primary.prepare_synchronous_standby(None)
    assert again.ok, "idempotent"
