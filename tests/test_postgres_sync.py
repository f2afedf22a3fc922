"""Synchronous replication against real PostgreSQL 15: once a standby is the synchronous one, a commit on the primary
waits for it; while it is down a commit waits until the client gives up; when it is back commits go through."""

from __future__ import annotations

import threading
import time

from tests.servers.postgres import PgNodes, primary_with_standbys, query, tcp, values, wait_for_value


def timed_insert(nodes: PgNodes, value: str, cancel_after_s: float = 0.5) -> tuple[float, list[str], list[str]]:
    """Insert on n0; a client that gives up after `cancel_after_s` cancels it (statement_timeout cannot: Postgres
    disarms it before the commit that waits). Returns the seconds it took, the notices Postgres sent, and what the
    session was waiting for when it was cancelled."""
    conn = tcp(nodes.settings("n0"))
    finished = threading.Event()
    waiting_for: list[str] = []

    def give_up() -> None:
        if not finished.wait(cancel_after_s):
            waiting_for.extend(
                row[0]
                for row in query(nodes.settings("n0"), "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,))
            )
            conn.cancel()

    try:
        pid = conn.get_backend_pid()
        canceller = threading.Thread(target=give_up)
        canceller.start()
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (%s)", (value,))
        elapsed = time.monotonic() - started
        finished.set()
        canceller.join()
        return elapsed, list(conn.notices), waiting_for
    finally:
        conn.close()


def test_a_synchronous_standby_holds_commits_until_it_acknowledges(nodes: PgNodes) -> None:
    primary, (standby,) = primary_with_standbys(nodes, "n1")
    query(primary.settings, "CREATE TABLE t (v text)")

    made = primary.set_synchronous_standby("n1")
    assert made.ok, made.detail
    ((status),) = primary.replication_status()
    assert (status.application_name, status.state, status.sync_state) == ("n1", "streaming", "sync")
    assert query(primary.settings, "SHOW synchronous_standby_names") == [('"n1"',)]
    assert not standby.set_synchronous_standby("n0").ok, "only a primary has synchronous standbys"
    elapsed, notices, _ = timed_insert(nodes, "acknowledged")
    assert elapsed < 0.4 and not notices
    assert "acknowledged" in values(standby.settings), "a synchronous commit is on the standby when it returns"

    assert standby.stop("fast").ok
    elapsed, notices, waiting_for = timed_insert(nodes, "waited")
    assert elapsed >= 0.5 and waiting_for == ["SyncRep"], "the commit waited for the missing standby"
    assert any("canceling wait for synchronous replication" in notice for notice in notices), notices

    assert standby.start_standby(nodes.upstream("n0")).ok
    assert primary.set_synchronous_standby("n1").ok, "it is the synchronous standby again once it streams"
    elapsed, notices, _ = timed_insert(nodes, "after return")
    assert elapsed < 0.4 and not notices
    wait_for_value(standby.settings, "waited")  # committed locally when the wait was cancelled, then streamed

    assert primary.set_synchronous_standby(None).ok
    assert query(primary.settings, "SHOW synchronous_standby_names") == [("",)]
    assert standby.stop("fast").ok
    elapsed, notices, _ = timed_insert(nodes, "nobody waits")
    assert elapsed < 0.4 and not notices
    assert primary.observe().streaming_replicas == frozenset()


def test_naming_a_standby_that_never_connects_fails_after_the_timeout(nodes: PgNodes) -> None:
    primary = nodes.node("n0")
    assert primary.bootstrap().ok and primary.start_primary().ok
    started = time.monotonic()
    made = primary.set_synchronous_standby("ghost", timeout_s=0.5)
    assert not made.ok and "ghost is not connected" in made.detail
    assert 0.5 <= time.monotonic() - started < 3
    assert primary.set_synchronous_standby(None).ok
