"""The Postgres adapter against real PostgreSQL 15: bootstrap (initdb, roles, own files), what observe() reports of a
primary stopped and running, bad settings, a foreign data directory, and operations repeated without harm.

Postgres runs as the `postgres` OS user in a /dev/shm directory it can reach (see tests/servers/postgres.py).
"""

from __future__ import annotations

import logging
import subprocess

import psycopg2
import psycopg2.extras
import pytest

from adapters.errors import ConfigError
from adapters.postgres.server import Postgres
from fsm.observation import DataDir
from tests.servers.postgres import PASSWORDS, TEST_PARAMETERS, PgNodes, cursor, query, tcp, values


def test_bootstrap_makes_a_checksummed_cluster_with_its_roles_and_leaks_no_password(
    nodes: PgNodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.postgres")
    settings = nodes.settings("n0", parameters=(*TEST_PARAMETERS, ("log_statement", "all")))
    node = Postgres(settings)

    booted = node.bootstrap()
    assert booted.ok, booted.detail
    stopped = node.observe()
    assert (stopped.data_dir, stopped.running, stopped.in_recovery) == (DataDir.VALID, False, False)
    assert stopped.system_identifier and stopped.system_identifier.isdigit()
    assert stopped.can_rewind and stopped.timeline == 1 and stopped.timeline_history == ()
    assert isinstance(stopped.wal_written, int) and stopped.wal_written > 0

    assert node.start_primary().ok
    state = node.observe()
    assert state.running and state.writable and state.system_identifier == stopped.system_identifier
    assert state.wal_written >= stopped.wal_written and state.following is None
    assert query(settings, "SHOW data_checksums") == [("on",)]

    # the superuser's password works over TCP, a wrong one does not
    assert query(settings, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        tcp(settings, password="wrong")
    # the admin may create databases and roles, and is no superuser
    with cursor(settings, user="admin", password=PASSWORDS["admin"]) as cur:
        cur.execute("SELECT rolcreatedb, rolcreaterole, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (True, True, False)
        cur.execute("CREATE DATABASE appdb")
    # the replication user opens a replication connection and sees this cluster
    conn = tcp(
        settings,
        user="replicator",
        password=PASSWORDS["replication"],
        connection_factory=psycopg2.extras.PhysicalReplicationConnection,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("IDENTIFY_SYSTEM")
            assert cur.fetchone()[0] == state.system_identifier
    finally:
        conn.close()

    # no password in a command line we ran, a log line, a process's arguments, or any file but the pgpass
    commands = caplog.text
    assert "initdb" in commands and "pg_controldata" in commands
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "postgres -D" in processes
    files = {
        path: path.read_bytes()
        for path in nodes.base.rglob("*")
        if path.is_file() and path.name != "pgpass" and not path.name.startswith(".s.PGSQL")
    }
    assert any(b"CREATE DATABASE appdb" in content for content in files.values()), "the statement log is on"
    for password in PASSWORDS.values():
        assert password not in commands
        assert password not in processes
        leaks = [str(path) for path, content in files.items() if password.encode() in content]
        assert not leaks, f"password found in {leaks}"
    assert PASSWORDS["replication"].encode() in (settings.own_dir / "pgpass").read_bytes().replace(b"\\\\", b"\\")
    assert (settings.own_dir / "pgpass").stat().st_mode & 0o077 == 0


def test_a_setting_postgres_rejects_is_reported_in_its_words_and_the_data_is_kept(nodes: PgNodes) -> None:
    good = nodes.node("n0")
    assert good.bootstrap().ok and good.start_primary().ok
    query(good.settings, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
    assert good.stop().ok
    before = good.observe()

    wrong_value = Postgres(nodes.settings("n0", parameters=(("shared_buffers", "lots"),)), start_timeout_s=10)
    started = wrong_value.start_primary()
    assert not started.ok
    assert 'invalid value for parameter "shared_buffers": "lots"' in started.detail
    unknown = Postgres(nodes.settings("n0", parameters=(("no_such_setting", 1),)), start_timeout_s=10)
    started = unknown.start_primary()
    assert not started.ok and 'unrecognized configuration parameter "no_such_setting"' in started.detail

    after = good.observe()
    assert (after.data_dir, after.system_identifier, after.running) == (DataDir.VALID, before.system_identifier, False)
    assert good.start_primary().ok
    assert values(good.settings) == {"kept"}

    # a reload with a rejected value fails and says so; the server keeps running on its old settings
    rejected = Postgres(nodes.settings("n0", parameters=(("work_mem", "much"),))).reload()
    assert not rejected.ok and "work_mem" in rejected.detail
    assert good.observe().writable


def test_a_missing_os_user_is_a_config_error_naming_the_setting(nodes: PgNodes) -> None:
    with pytest.raises(ConfigError, match=r"postgresql\.os_user: no OS user 'regent-nobody-here'"):
        Postgres(nodes.settings("n0", os_user="regent-nobody-here"))
    with pytest.raises(ConfigError, match=r"postgresql\.os_user: 'root' is root"):
        Postgres(nodes.settings("n0", os_user="root"))


def test_a_data_directory_of_another_cluster_is_reported_and_never_cloned_over(nodes: PgNodes) -> None:
    ours = nodes.node("n0")
    theirs = nodes.node("x1")
    assert ours.bootstrap().ok and ours.start_primary().ok
    assert theirs.bootstrap().ok
    foreign = theirs.observe()
    assert foreign.data_dir is DataDir.VALID
    assert foreign.system_identifier != ours.observe().system_identifier

    refused = theirs.clone(nodes.upstream("n0"))
    assert not refused.ok and "valid cluster" in refused.detail and foreign.system_identifier in refused.detail
    assert theirs.observe().system_identifier == foreign.system_identifier
    assert not list(nodes.base.glob("x1/data.moved-*"))

    # a re-clone moves it aside (never deletes it) and copies ours
    assert ours.ensure_slots(("x1",)).ok
    recloned = theirs.reclone(nodes.upstream("n0"))
    assert recloned.ok, recloned.detail
    assert theirs.observe().system_identifier == ours.observe().system_identifier
    (moved,) = nodes.base.glob("x1/data.moved-*")
    assert (moved / "PG_VERSION").is_file()


def test_operations_repeated_or_out_of_place_change_nothing(nodes: PgNodes) -> None:
    node = nodes.node("n0")
    assert node.stop().ok, "stopping a server that never ran"
    assert node.demote("graceful").ok
    assert not node.start_primary().ok, "nothing to start in an empty directory"
    assert node.bootstrap().ok
    again = node.bootstrap()
    assert again.ok and "already initialized" in again.detail

    promoted = node.promote()
    assert not promoted.ok and "never starts" in promoted.detail
    assert not node.observe().running
    assert not node.follow(nodes.upstream("n0")).ok

    assert node.start_primary().ok
    assert "already running" in node.start_primary().detail
    assert "already" in node.promote().detail
    assert node.promote().ok
    assert node.observe().timeline == 1, "promoting a primary starts no timeline"
    assert node.reload().ok
    assert node.restart().ok and node.observe().writable

    assert node.ensure_slots(("n1", "Node-2.east")).ok
    assert node.ensure_slots(("n1", "Node-2.east")).detail == "slots already as wanted"
    slots = {row[0] for row in query(node.settings, "SELECT slot_name FROM pg_replication_slots")}
    assert slots == {"n1", "node_2_east"}
    dropped = node.ensure_slots(("n0", "n1"))  # its own name gets no slot
    assert dropped.ok and "dropped node_2_east" in dropped.detail
    assert {row[0] for row in query(node.settings, "SELECT slot_name FROM pg_replication_slots")} == {"n1"}

    assert node.stop("fast").ok
    assert node.stop("immediate").detail == "not running"
    assert not node.ensure_slots(("n1",)).ok
