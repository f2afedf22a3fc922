"""Issue 18 end to end, on real processes: synchronous mode survives a whole-etcd outage.

Three `python -m runtime` agents with `synchronous_mode: true` on one real etcd, each with its real PostgreSQL 15
(the timings of tests/servers/cluster.py: ttl 10, loop_wait 2, retry_timeout 3, safety_margin 1). etcd is killed for
longer than ttl, so the leader goes read-only (`lead_dcs_down`: restarted as a standby of nobody, without
synchronous_standby_names), then started again on the same ports and data directory. When the same node leads
again, its synchronous_standby_names must name the `sync` key's standby from the moment it takes writes (at the
latest one loop_wait later); a commit made right after the return must be on that standby, which the test proves by
killing the leader's host and reading the commit on the promoted standby.

Either the old leader or the key's standby may win the race after the outage (synchronous mode lets no one else):
the standby's agent is frozen from etcd's return until a node leads again, so that the old leader does (if another
node still wins, the outage is repeated, a bounded number of times). Measured times are printed with a
`[timing]` prefix (run with -s).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from adapters.postgres.observe import parse_standby_names
from tests.servers.cluster import TABLE, TIMINGS, Cluster, Node

TTL, LOOP_WAIT = TIMINGS["ttl"], TIMINGS["loop_wait"]
SLACK_S = 1.0
ATTEMPTS = 4


class SyncCluster(Cluster):
    """The test cluster with `synchronous_mode: true` in every node's YAML."""

    def config(self, node: Node) -> dict[str, Any]:
        return {**super().config(node), "synchronous_mode": True}


@pytest.fixture
def cluster() -> Any:
    started = time.monotonic()
    with SyncCluster(3) as made:
        made.start()
        print(f"\n[timing] a fresh synchronous 3-node cluster healthy in {time.monotonic() - started:.2f} s")
        yield made


def sync_key(cluster: Cluster) -> tuple[str | None, str | None] | None:
    """The `sync` key as etcd holds it now (a quorum read): (leader, sync_standby), or None when absent."""
    url = f"{cluster.etcd.url}/v2/keys/service/{cluster.scope}/sync?quorum=true"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            data = json.loads(json.loads(response.read())["node"]["value"])
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return data.get("leader"), data.get("sync_standby")


def server_state(cluster: Cluster, n: int) -> tuple[bool, frozenset[str]] | None:
    """(in recovery, synchronous_standby_names) as a new session on node n sees them; None when it answers no
    query."""
    try:
        ((recovering, names),) = cluster.sql(
            n, "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')", timeout_s=1
        )
    except psycopg2.Error:
        return None
    return bool(recovering), parse_standby_names(names)


def index(cluster: Cluster, name: str) -> int:
    return next(node.index for node in cluster.nodes if node.name == name)


def wait_synchronous(cluster: Cluster, timeout_s: float = 60.0) -> tuple[int, int]:
    """Until the primary's sync key names a standby that its synchronous_standby_names names and its
    pg_stat_replication reports in sync state: (primary, sync standby)."""

    def settled() -> tuple[int, int] | None:
        primary = cluster.healthy()
        key = sync_key(cluster) if primary is not None else None
        if primary is None or key is None or key[0] != cluster.nodes[primary].name or key[1] is None:
            return None
        state = server_state(cluster, primary)
        rows = cluster.sql(primary, "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'")
        if state is None or state[1] != {key[1]} or [row[0] for row in rows] != [key[1]]:
            return None
        return primary, index(cluster, key[1])

    return cluster.wait_for(settled, timeout_s, "a primary with a synchronous standby named in the sync key")


@dataclass
class Commit:
    """A commit made in a background thread; the client gives up after `give_up_s` (a cancelled wait for the
    synchronous standby leaves the commit local only, and Postgres says so in a notice: not acknowledged)."""

    started: float = 0.0
    acknowledged_at: float | None = None
    outcome: str = "running"


def commit_in_background(cluster: Cluster, n: int, value: str, give_up_s: float) -> tuple[Commit, threading.Thread]:
    commit = Commit(started=time.monotonic())

    def run() -> None:
        try:
            conn = cluster.connect(n, timeout_s=2)
        except psycopg2.Error as error:
            commit.outcome = f"no connection: {error}"
            return
        timer = threading.Timer(give_up_s, conn.cancel)
        try:
            timer.start()
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {TABLE} (v) VALUES (%s)", (value,))
            if any("synchronous replication" in notice for notice in conn.notices):
                commit.outcome = "cancelled while waiting for the synchronous standby: " + "".join(conn.notices)
            else:
                commit.acknowledged_at = time.monotonic()
                commit.outcome = "acknowledged"
        except psycopg2.Error as error:
            commit.outcome = f"failed: {error}"
        finally:
            timer.cancel()
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return commit, thread


@dataclass
class Return:
    """What the poll saw from etcd's return until one loop_wait after the leader took writes again."""

    leader: int | None = None  # the node that left recovery first
    writable_at: float | None = None
    named_at: float | None = None  # first sample: writable and the setting names the key's standby
    unsafe_samples: int = 0  # writable, the key (read before and after) names a standby the setting lacks
    samples: int = 0
    last: str = ""


def watch_the_return(
    cluster: Cluster, old: int, back_at: float, commit_value: str, on_leader: Any = lambda: None
) -> tuple[Return, Any]:
    """Poll every node from etcd's return until one leaves recovery (then call `on_leader`), then go on polling the
    old leader for one loop_wait (+ slack); a commit is started on the old leader as soon as it takes writes."""
    seen = Return()
    started_commit: Any = None
    deadline = back_at + 60
    while time.monotonic() < deadline:
        if seen.leader is None:
            for n in range(len(cluster.nodes)):
                state = server_state(cluster, n)
                if state is not None and not state[0]:
                    seen.leader, seen.writable_at = n, time.monotonic()
                    break
            if seen.leader is None:
                time.sleep(0.02)
                continue
            on_leader()
            if seen.leader != old:
                return seen, None
            started_commit = commit_in_background(cluster, old, commit_value, give_up_s=20)
        before = sync_key(cluster)
        state = server_state(cluster, old)
        after = sync_key(cluster)
        now = time.monotonic()
        seen.samples += 1
        seen.last = f"key {before}/{after}, server {state}"
        if state is not None and not state[0] and before == after and before is not None:
            owner, standby = before
            if owner == cluster.nodes[old].name and standby is not None:
                if standby in state[1]:
                    seen.named_at = seen.named_at or now
                else:
                    seen.unsafe_samples += 1
        assert seen.writable_at is not None
        if now > seen.writable_at + LOOP_WAIT + SLACK_S:
            return seen, started_commit
        time.sleep(0.02)
    raise TimeoutError(cluster._explain(f"no node left recovery within 60 s of etcd's return ({seen.last})"))


def test_the_same_leader_after_an_etcd_outage_keeps_its_synchronous_standby(cluster: SyncCluster) -> None:
    test_started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        primary, standby = wait_synchronous(cluster)
        name, standby_name = cluster.nodes[primary].name, cluster.nodes[standby].name
        cluster.write(primary, f"before outage {attempt}")

        stopped = time.monotonic()
        cluster.stop_etcd()
        cluster.wait_for(
            lambda p=primary: (s := server_state(cluster, p)) is not None and s[0],
            TTL + 5,
            f"{name} read-only",
            interval_s=0.05,
        )
        read_only = time.monotonic() - stopped
        dropped = server_state(cluster, primary)
        time.sleep(max(0.0, stopped + TTL + 1 - time.monotonic()))  # the leader key's TTL is over too
        outage = time.monotonic() - stopped
        # The key's standby may win the race for the free key (safe, but not what this test is about): its agent
        # waits, frozen, until a node leads again. Its Postgres keeps streaming meanwhile.
        cluster.pause_agent(standby)
        try:
            cluster.start_etcd()
            back_at = time.monotonic()
            value = f"right after the return {attempt}"
            seen, started_commit = watch_the_return(
                cluster, primary, back_at, value, on_leader=lambda s_=standby: cluster.resume_agent(s_)
            )
        finally:
            cluster.resume_agent(standby)
        assert seen.leader is not None and seen.writable_at is not None
        winner = cluster.nodes[seen.leader].name
        print(
            f"[timing] attempt {attempt}: etcd down -> leader {name} read-only in {read_only:.3f} s (setting then "
            f"{sorted(dropped[1]) if dropped else '?'}); etcd down {outage:.3f} s; back -> {winner} writable "
            f"{seen.writable_at - back_at:.3f} s later"
        )
        if seen.leader != primary:
            print(f"[attempt {attempt}] {winner}, not {name}, leads after the outage: once more")
            continue

        assert seen.unsafe_samples == 0, f"{seen.unsafe_samples} samples writable without the key's standby"
        assert seen.named_at is not None, f"never named the key's standby within one loop_wait: {seen.last}"
        print(
            f"[timing] {name} writable -> synchronous_standby_names names the key's standby "
            f"{max(0.0, seen.named_at - seen.writable_at):.3f} s later, at the first sample (bound loop_wait + "
            f"{SLACK_S:g} s = {LOOP_WAIT + SLACK_S:g} s; {seen.samples} samples in it, none without the standby)"
        )
        assert seen.named_at - seen.writable_at <= LOOP_WAIT + SLACK_S

        commit, thread = started_commit
        thread.join(25)
        assert commit.acknowledged_at is not None, commit.outcome
        key = sync_key(cluster)
        assert key is not None and key[0] == name and key[1] is not None, key
        sync_standby = index(cluster, key[1])
        print(
            f"[timing] commit started {commit.started - seen.writable_at:.3f} s after {name} took writes, "
            f"acknowledged in {commit.acknowledged_at - commit.started:.3f} s; sync key {key} "
            f"({'the same' if key[1] == standby_name else 'another'} standby as before the outage)"
        )

        killed = time.monotonic()
        cluster.kill_host(primary)
        third = next(n for n in range(len(cluster.nodes)) if n not in (primary, sync_standby))
        promoted = cluster.wait_for(
            lambda s_=sync_standby: (s := server_state(cluster, s_)) is not None and not s[0],
            TTL + LOOP_WAIT + 15,
            f"{key[1]} promoted",
            interval_s=0.05,
        )
        assert promoted
        failover = time.monotonic() - killed
        assert cluster.has_value(sync_standby, value), "the acknowledged commit is on the promoted sync standby"
        third_state = server_state(cluster, third)
        assert third_state is None or third_state[0], "only the sync standby was promoted"
        print(
            f"[timing] {name}'s host killed -> {key[1]} promoted in {failover:.3f} s with the commit; "
            f"whole test {time.monotonic() - test_started:.1f} s, {attempt} outage(s)"
        )
        return
    pytest.fail(f"the old leader never led again after {ATTEMPTS} etcd outages")
