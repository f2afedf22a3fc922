"""Cloning replicas against real PostgreSQL 15: pg_basebackup, a `create_replica_methods` script with its arguments and
the fall-back to the next method, an unreachable upstream, and what observe() says of a streaming standby.
Clone times are printed (run with -s)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2

from adapters.postgres.settings import PostgresSettings, ReplicaMethod
from adapters.postgres.values import Upstream
from fsm.observation import DataDir
from tests.servers.common import free_port, wait_until
from tests.servers.postgres import PgNodes, auto_conf_keys, cloning_script, query, values, wait_for_value

FAILING_SCRIPT = """#!/bin/sh
# a backup tool that gets half way: it leaves a file behind, then gives up
for arg; do case $arg in --datadir=*) datadir=${arg#--datadir=};; esac; done
echo "half a restore" > "$datadir/junk"
echo "backup store unreachable" >&2
exit 3
"""


def test_a_basebackup_clone_streams_from_the_primary(nodes: PgNodes) -> None:
    primary = nodes.node("n0")
    assert primary.bootstrap().ok and primary.start_primary().ok
    assert primary.ensure_slots(("n1",)).ok
    query(primary.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before clone')")
    # pg_basebackup copies postgresql.auto.conf: node settings there must not reach the copy
    query(primary.settings, "ALTER SYSTEM SET primary_conninfo = 'host=192.0.2.1 port=1'")
    query(primary.settings, f"ALTER SYSTEM SET port = {primary.settings.port}")
    standby = nodes.node("n1")
    assert standby.observe().data_dir is DataDir.EMPTY

    started = time.monotonic()
    cloned = standby.clone(nodes.upstream("n0"), (ReplicaMethod("basebackup"),))
    clone_s = time.monotonic() - started
    print(f"\n[timing] clone with pg_basebackup: {clone_s * 1000:.0f} ms ({cloned.detail})")
    assert cloned.ok, cloned.detail
    copy = standby.observe()
    assert (copy.data_dir, copy.running) == (DataDir.VALID, False)
    assert copy.system_identifier == primary.observe().system_identifier
    assert auto_conf_keys(standby.settings) == set(), "the copied node settings are gone"

    assert standby.start_standby(nodes.upstream("n0")).ok
    query(primary.settings, "INSERT INTO t VALUES ('after clone')")
    wait_for_value(standby.settings, "after clone")
    assert values(standby.settings) == {"before clone", "after clone"}

    wait_until(lambda: primary.observe().streaming_replicas == {"n1"}, 10, "n1 streaming")
    facts = standby.observe()
    assert facts.running and facts.in_recovery and not facts.writable
    assert facts.following == "n0" and facts.timeline == 1 and facts.wal_written == 0
    assert isinstance(facts.wal_received, int) and isinstance(facts.wal_replayed, int)
    assert 0 < facts.wal_replayed <= facts.wal_received <= primary.observe().wal_written
    assert query(standby.settings, "SHOW primary_slot_name") == [("n1",)]
    assert query(standby.settings, "SHOW port") == [(str(standby.settings.port),)]
    ((name, state, sync, lag),) = [tuple(row.__dict__.values()) for row in primary.replication_status()]
    assert (name, state, sync) == ("n1", "streaming", "async") and isinstance(lag, int) and lag >= 0
    assert standby.replication_status() == []

    kept = primary.ensure_slots(())
    assert kept.ok and "kept n1 while it is in use" in kept.detail
    assert query(primary.settings, "SELECT slot_name, active FROM pg_replication_slots") == [("n1", True)]
    assert standby.start_standby(nodes.upstream("n0")).detail == "already following n0"


def test_a_replica_script_gets_its_arguments_and_a_failing_method_falls_back(nodes: PgNodes) -> None:
    primary = nodes.node("n0")
    assert primary.bootstrap().ok and primary.start_primary().ok
    query(primary.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('cloned by script')")
    scripts = nodes.base / "scripts"
    scripts.mkdir(mode=0o777)
    scripts.chmod(0o777)  # the script, run as postgres, writes its arguments here
    args_file = scripts / "args.txt"
    failing = _script(scripts / "failing.sh", FAILING_SCRIPT)
    cloning = _script(scripts / "cloning.sh", cloning_script(args_file))
    methods = (
        ReplicaMethod("restore_tool", command=(str(failing),)),
        ReplicaMethod("my_clone", command=(str(cloning),), parameters=(("stanza", "main"), ("jobs", "2"))),
        ReplicaMethod("basebackup"),
    )
    standby = nodes.node("n1")

    cloned = standby.clone(nodes.upstream("n0"), methods)
    assert cloned.ok, cloned.detail
    assert "restore_tool failed: failing.sh exited with 3: backup store unreachable" in cloned.detail
    assert "by my_clone" in cloned.detail
    (moved,) = nodes.base.glob("n1/data.moved-*")
    assert (moved / "junk").read_text() == "half a restore\n", "the failed attempt was moved aside, not deleted"

    args = args_file.read_text().splitlines()
    data_dir = standby.settings.data_dir
    assert args[:3] == ["--scope=regent-test", f"--datadir={data_dir}", "--role=replica"]
    assert args[3].startswith("--connstring=") and f"port='{primary.settings.port}'" in args[3]
    assert "user='replicator'" in args[3]
    assert args[4:] == ["--stanza=main", "--jobs=2"]

    assert standby.start_standby(nodes.upstream("n0")).ok
    assert values(standby.settings) == {"cloned by script"}
    assert standby.observe().following == "n0"


def test_cloning_from_an_unreachable_upstream_fails_clearly_and_leaves_no_half_cluster(nodes: PgNodes) -> None:
    standby = nodes.node("n1")
    ghost = Upstream("ghost", "127.0.0.1", free_port())

    started = time.monotonic()
    failed = standby.clone(ghost)
    assert time.monotonic() - started < 10
    assert not failed.ok
    assert "basebackup failed" in failed.detail and "Connection refused" in failed.detail
    assert standby.observe().data_dir is DataDir.EMPTY
    assert not list(nodes.base.glob("n1/data.moved-*"))
    assert not standby.start_standby(ghost).ok

    # an unusable directory in the way is moved aside (never deleted), and the failed clone leaves it empty
    data_dir: Path = standby.settings.data_dir
    (data_dir / "notes.txt").write_text("somebody's files")
    assert standby.observe().data_dir is DataDir.BROKEN
    failed = standby.clone(ghost)
    assert not failed.ok and "moved data aside" in failed.detail
    (moved,) = nodes.base.glob("n1/data.moved-*")
    assert (moved / "notes.txt").read_text() == "somebody's files"
    assert standby.observe().data_dir is DataDir.EMPTY


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_standby_short_of_consistency_counts_as_running_and_takes_no_writes(nodes: PgNodes) -> None:
    primary = nodes.node("n0")
    assert primary.bootstrap().ok and primary.start_primary().ok
    standby = nodes.node("n1")
    assert standby.clone(nodes.upstream("n0")).ok
    for segment in (standby.settings.data_dir / "pg_wal").glob("0*"):
        segment.unlink()  # the WAL the copy needs must now come from an upstream
    ghost = Upstream("ghost", "127.0.0.1", free_port())
    standby.start_timeout_s = 1.0

    started = standby.start_standby(ghost)
    assert not started.ok and "not ready within 1.0 s (still starting)" in started.detail
    facts = standby.observe()
    assert facts.running and facts.in_recovery and not facts.writable and facts.following == "ghost"
    assert facts.system_identifier == primary.observe().system_identifier
    assert "already takes no writes" in standby.demote("graceful").detail

    # re-pointed at a real upstream (with its slot), it gets the WAL it lacks and opens for reads
    assert primary.ensure_slots(("n1",)).ok
    assert standby.start_standby(nodes.upstream("n0")).ok
    wait_until(lambda: answers(standby.settings), 10, "n1 answers queries")
    assert standby.observe().following == "n0"


def answers(settings: PostgresSettings) -> bool:
    try:
        return query(settings, "SELECT 1") == [(1,)]
    except psycopg2.Error:
        return False
