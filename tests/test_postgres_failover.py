"""Failover against real PostgreSQL 15: promote a standby, re-point another at it with a reload, pg_rewind the old
primary after it wrote diverging rows (its own port and slot survive pg_rewind copying the other node's config),
re-clone when pg_rewind is impossible, and the three demotion modes. Promote and rewind times are printed (-s)."""

from __future__ import annotations

import time

import psycopg2
import pytest

from adapters.postgres.observe import read_controldata
from fsm.observation import DataDir, TimelineSwitch
from tests.servers.common import wait_until
from tests.servers.postgres import (
    TEST_PARAMETERS,
    PgNodes,
    auto_conf_keys,
    cursor,
    primary_with_standbys,
    query,
    values,
    wait_for_value,
)


def test_promote_repoint_and_rewind_the_old_primary(nodes: PgNodes) -> None:
    old, (new, other) = primary_with_standbys(nodes, "n1", "n2")
    query(old.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('shared')")
    wait_for_value(new.settings, "shared")
    wait_for_value(other.settings, "shared")
    wait_until(lambda: old.observe().streaming_replicas == {"n1", "n2"}, 10, "both standbys streaming")

    started = time.monotonic()
    promoted = new.promote()
    promote_s = time.monotonic() - started
    print(f"\n[timing] promote (standby -> writable): {promote_s * 1000:.0f} ms")
    assert promoted.ok, promoted.detail
    again = new.promote()
    assert again.ok and "already" in again.detail
    facts = new.observe()
    assert facts.writable and facts.timeline == 2 and facts.following is None
    ((switch),) = facts.timeline_history
    assert switch.timeline == 1 and 0 < switch.switch_lsn <= facts.wal_written
    assert switch == TimelineSwitch(1, switch.switch_lsn, "no recovery target specified")
    assert new.ensure_slots(("n0", "n2")).ok

    # the other standby follows the new primary after a reload, without a restart
    pid_before = query(other.settings, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'")
    followed = other.follow(nodes.upstream("n1"))
    assert followed.ok and "reloaded" in followed.detail
    query(new.settings, "INSERT INTO t VALUES ('on timeline 2')")
    wait_for_value(other.settings, "on timeline 2")
    wait_until(lambda: other.observe().timeline == 2, 10, "n2 on timeline 2")
    facts = other.observe()
    assert facts.following == "n1" and facts.in_recovery and facts.timeline_history == (switch,)
    assert query(other.settings, "SELECT sender_port FROM pg_stat_wal_receiver") == [(new.settings.port,)]
    assert query(other.settings, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'") == pid_before

    # the old primary, still writable on timeline 1, writes rows nobody else has; then it crashes
    query(old.settings, "INSERT INTO t SELECT 'diverged ' || i FROM generate_series(1, 1000) i")
    assert old.demote("immediate").ok
    stopped = old.observe()
    assert not stopped.running and stopped.timeline == 1 and stopped.data_dir is DataDir.VALID

    # pg_rewind copies the source's postgresql.auto.conf: give it settings that would be wrong on the old primary
    query(new.settings, f"ALTER SYSTEM SET port = {new.settings.port}")
    query(new.settings, "ALTER SYSTEM SET primary_slot_name = 'stale'")

    started = time.monotonic()
    rewound = old.rewind(nodes.upstream("n1"))
    rewind_s = time.monotonic() - started
    print(f"[timing] pg_rewind of the crashed old primary: {rewind_s * 1000:.0f} ms ({rewound.detail})")
    assert rewound.ok, rewound.detail
    assert "servers diverged" in rewound.detail
    assert auto_conf_keys(old.settings) == set(), "the copied node settings are gone"

    assert old.start_standby(nodes.upstream("n1")).ok
    query(new.settings, "INSERT INTO t VALUES ('after rewind')")
    wait_for_value(old.settings, "after rewind")
    assert values(old.settings) == {"shared", "on timeline 2", "after rewind"}, "the diverged rows are gone"
    assert query(old.settings, "SHOW port") == [(str(old.settings.port),)]
    assert query(old.settings, "SHOW primary_slot_name") == [("n0",)]
    wait_until(lambda: new.observe().streaming_replicas == {"n0", "n2"}, 10, "n0 and n2 streaming from n1")
    facts = old.observe()
    assert facts.following == "n1" and facts.timeline == 2 and facts.timeline_history == (switch,)


def test_when_pg_rewind_is_impossible_the_old_primary_is_recloned(nodes: PgNodes) -> None:
    no_hints = {"initdb": ("--encoding=UTF8",), "parameters": (*TEST_PARAMETERS, ("wal_log_hints", False))}
    old = nodes.node("n0", **no_hints)
    new = nodes.node("n1", **no_hints)
    assert old.bootstrap().ok and old.start_primary().ok
    assert old.ensure_slots(("n1",)).ok
    query(old.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('shared')")
    assert new.clone(nodes.upstream("n0")).ok and new.start_standby(nodes.upstream("n0")).ok
    wait_for_value(new.settings, "shared")
    assert new.promote().ok and new.ensure_slots(("n0",)).ok
    query(old.settings, "INSERT INTO t VALUES ('diverged')")
    assert old.stop("fast").ok
    assert not old.observe().can_rewind

    rewound = old.rewind(nodes.upstream("n1"))
    assert not rewound.ok
    assert "target server needs to use either data checksums or" in rewound.detail

    recloned = old.reclone(nodes.upstream("n1"))
    assert recloned.ok, recloned.detail
    (moved,) = nodes.base.glob("n0/data.moved-*")
    assert (moved / "PG_VERSION").is_file()
    assert old.start_standby(nodes.upstream("n1")).ok
    query(new.settings, "INSERT INTO t VALUES ('after reclone')")
    wait_for_value(old.settings, "after reclone")
    assert values(old.settings) == {"shared", "after reclone"}
    assert old.observe().timeline == 2
    assert query(old.settings, "SHOW port") == [(str(old.settings.port),)]


def test_demotion_modes(nodes: PgNodes) -> None:
    primary, (standby,) = primary_with_standbys(nodes, "n1")
    query(primary.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('first')")

    # read-only: a standby of nobody, reads go on, writes are refused; promote lifts it (a new timeline)
    demoted = primary.demote("read-only")
    assert demoted.ok, demoted.detail
    facts = primary.observe()
    assert facts.running and facts.in_recovery and not facts.writable and facts.following is None
    assert values(primary.settings) == {"first"}
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction), cursor(primary.settings) as cur:
        cur.execute("INSERT INTO t VALUES ('refused')")
    assert "already takes no writes" in primary.demote("read-only").detail
    assert primary.promote().ok
    assert primary.observe().writable and primary.observe().timeline == 2

    # graceful: a checkpoint and a fast shutdown; the standby has received everything, shutdown record included
    wait_until(lambda: primary.observe().streaming_replicas == {"n1"}, 10, "n1 streaming on the new timeline")
    query(primary.settings, "INSERT INTO t SELECT 'row ' || i FROM generate_series(1, 100) i")
    assert primary.demote("graceful").ok
    stopped = primary.observe()
    control = read_controldata(primary.runner, primary.settings.data_dir)
    assert not isinstance(control, str) and control.state == "shut down"
    wait_until(lambda: standby.observe().wal_received > stopped.wal_written, 10, "the shutdown checkpoint streamed")
    assert "row 100" in values(standby.settings)

    # immediate: no shutdown checkpoint; the next start runs crash recovery and keeps every committed row
    assert primary.start_primary().ok
    query(primary.settings, "INSERT INTO t VALUES ('last')")
    assert primary.demote("immediate").ok
    control = read_controldata(primary.runner, primary.settings.data_dir)
    assert not isinstance(control, str) and control.state == "in production"
    assert not primary.observe().running
    assert primary.demote("immediate").detail == "not running"
    assert primary.start_primary().ok
    assert "last" in values(primary.settings)
