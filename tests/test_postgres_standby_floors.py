"""The settings a hot standby needs at least as high as its primary, against real PostgreSQL 15: a standby whose own
settings say less starts with its primary's values and shows pending_restart; one that runs when its primary raises
a value shows pending_restart while its replay waits, and a restart lets it replay again."""

from __future__ import annotations

from typing import Any

from tests.servers.common import wait_until
from tests.servers.postgres import TEST_PARAMETERS, PgNodes, primary_with_standbys, query, wait_for_value


def with_settings(**values: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((name, value) for name, value in TEST_PARAMETERS if name not in values) + tuple(values.items())


def test_a_standby_below_its_primary_starts_with_the_primarys_values(nodes: PgNodes) -> None:
    primary = nodes.node("n0", parameters=with_settings(max_connections=30))
    assert primary.bootstrap().ok and primary.start_primary().ok and primary.ensure_slots(("n1",)).ok
    standby = nodes.node("n1", parameters=with_settings(max_connections=25))  # lower than its primary's
    assert standby.clone(nodes.upstream("n0")).ok
    started = standby.start_standby(nodes.upstream("n0"))
    assert started.ok, started.detail
    assert query(standby.settings, "SHOW max_connections") == [("30",)]
    assert standby.observe().pending_restart  # its own settings say 25: not what it runs with
    query(primary.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('replayed')")
    wait_for_value(standby.settings, "replayed")

    # the standby's settings catch up: a restart starts it with them, and nothing is pending any more
    agreed = nodes.node("n1", parameters=with_settings(max_connections=30))
    assert agreed.restart().ok
    assert not agreed.observe().pending_restart
    assert query(agreed.settings, "SHOW max_connections") == [("30",)]


def test_a_standby_whose_primary_raises_a_value_waits_for_a_restart(nodes: PgNodes) -> None:
    primary, [standby] = primary_with_standbys(nodes, "n1")
    query(primary.settings, "CREATE TABLE t (v text)")
    wait_until(lambda: query(standby.settings, "SELECT to_regclass('t') IS NOT NULL") == [(True,)], 10, "t")
    assert not standby.observe().pending_restart

    raised = nodes.node("n0", parameters=with_settings(max_worker_processes=12))
    assert raised.restart().ok  # the primary first: its new value reaches the standby in the WAL
    query(primary.settings, "INSERT INTO t VALUES ('after the raise')")
    wait_until(lambda: standby.observe().pending_restart, 20, "pending_restart on the standby")
    assert query(standby.settings, "SELECT pg_get_wal_replay_pause_state()") == [("paused",)]

    assert standby.restart().ok  # with pg_control's 12, above its own 8
    assert query(standby.settings, "SHOW max_worker_processes") == [("12",)]
    wait_for_value(standby.settings, "after the raise")
    assert standby.observe().pending_restart  # its own settings still say 8
