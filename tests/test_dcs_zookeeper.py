"""The ZooKeeper adapter against a real ZooKeeper 3.8 (no mocks): Patroni's layout, leases as sessions, races,
watches, failures and recovery, Exhibitor.

One server serves the module (each test has its own scope); the test that kills and pauses servers starts its own.
Latencies that matter (session expiry after SIGKILL, watch wake-up) are measured and printed (`pytest -s`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import select
import signal
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from adapters.dcs.base import Outcome
from adapters.dcs.exhibitor import connection_string, parse_cluster_list
from adapters.dcs.layout import MemberRecord
from adapters.dcs.settings import ExhibitorSettings, ZooKeeperSettings
from adapters.dcs.zookeeper import ZooKeeperDcs
from fsm.observation import (
    ClusterView,
    FailoverRequest,
    LeaderKey,
    Member,
    SyncState,
    Tags,
    TimelineSwitch,
)
from tests.servers.common import free_port, wait_until
from tests.servers.zookeeper import ExhibitorStub, ZooKeeperServer

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
SESSION_S = 4.0

DONE, CONFLICT, UNAVAILABLE = Outcome.DONE, Outcome.CONFLICT, Outcome.UNAVAILABLE


@pytest.fixture(scope="module")
def zk() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture
def scope() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def root(scope: str) -> str:
    return f"/service/{scope}"


@pytest.fixture
def make(zk: ZooKeeperServer, scope: str) -> Iterator[Callable[..., ZooKeeperDcs]]:
    """A ZooKeeperDcs on this test's scope (the module's server unless `hosts` says otherwise); closed afterwards."""
    made: list[ZooKeeperDcs] = []

    def factory(
        name: str,
        hosts: tuple[tuple[str, int], ...] | None = None,
        retry_timeout_s: float = 3.0,
        exhibitor: ExhibitorSettings | None = None,
        session_timeout_s: float = SESSION_S,
    ) -> ZooKeeperDcs:
        settings = ZooKeeperSettings(
            scope=scope,
            hosts=tuple(zk.hosts) if hosts is None else hosts,
            session_timeout_s=session_timeout_s,
            exhibitor=exhibitor,
        )
        dcs = ZooKeeperDcs(name, settings, retry_timeout_s)
        made.append(dcs)
        return dcs

    yield factory
    for dcs in made:
        dcs.close()


@pytest.fixture
def raw(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain kazoo client, to see the znodes as any other ZooKeeper user would."""
    client = KazooClient(zk.connection_string)
    client.start(timeout=5)
    yield client
    client.stop()
    client.close()


def record(name: str, **fields: Any) -> MemberRecord:
    return MemberRecord(name, f"postgres://replicator@{name}:5432/postgres", f"http://{name}:8008/patroni", **fields)


def watch_in_thread(dcs: ZooKeeperDcs, timeout_s: float = 10.0) -> tuple[threading.Thread, dict[str, Any]]:
    """Start `wait_for_leader_change` in a thread; the box gets its answer and the moment it returned."""
    box: dict[str, Any] = {}

    def run() -> None:
        box["changed"] = dcs.wait_for_leader_change(timeout_s)
        box["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.3)  # registering the watch is one round trip; a change before it would not be seen
    return thread, box


def until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `check` until true; the seconds it took."""
    start = time.monotonic()
    wait_until(check, timeout_s, what, interval_s=0.05)
    return time.monotonic() - start


# --- layout, round trip ----------------------------------------------------------------------------------------


def test_the_cluster_view_round_trips_as_patroni_znodes(
    make: Callable[..., ZooKeeperDcs], raw: KazooClient, root: str
) -> None:
    n0, n1 = make("n0"), make("n1")
    config = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}}
    assert n0.publish_member(record("n0", role="primary", wal_position=50331800, timeline=2, tags=Tags())) is DONE
    n1_tags = Tags(nofailover=True, nosync=True, failover_priority=0)
    assert n1.publish_member(record("n1", state="starting", wal_position=50331700, timeline=2, tags=n1_tags)) is DONE
    assert n0.race_for_initialize() is DONE
    assert n1.race_for_initialize() is CONFLICT
    assert n0.set_initialize("7260000000000000001") is DONE
    assert n1.set_initialize("7260000000000000002") is CONFLICT  # no longer "" (claimed): set once
    assert n1.cancel_initialize() is CONFLICT
    assert n0.acquire_leader() is DONE
    assert n1.acquire_leader() is CONFLICT
    assert n0.write_sync(SyncState("n0", "n1")) is DONE
    assert n0.write_history((TimelineSwitch(1, 50331648, "no recovery target specified", new_leader="n0"),)) is DONE
    assert n1.request_failover(FailoverRequest(leader="n0", candidate="n1")) is DONE
    assert n0.publish_leader_optime(50331800) is DONE
    assert n0.set_config(config, None) is DONE

    expected = ClusterView(
        leader=LeaderKey("n0", 0),
        members=(
            Member("n0", "primary", "running", 50331800, 2, Tags(), "http://n0:8008/patroni", record("n0").conn_url),
            Member("n1", "replica", "starting", 50331700, 2, n1_tags, "http://n1:8008/patroni", record("n1").conn_url),
        ),
        initialize="7260000000000000001",
        failover=FailoverRequest(leader="n0", candidate="n1"),
        sync=SyncState("n0", "n1"),
        leader_wal_position=50331800,
        history=(TimelineSwitch(1, 50331648, "no recovery target specified", new_leader="n0"),),
    )
    for reader in (n0, n1):
        snapshot = reader.read_cluster()
        assert snapshot is not None
        written = tuple(dataclasses.replace(line, at=None) for line in snapshot.view.history)  # the time of writing
        assert dataclasses.replace(snapshot.view, history=written) == expected
        assert (snapshot.config, snapshot.config_version, snapshot.problems) == (config, 0, ())

    # The raw znodes are what Patroni writes and reads.
    assert sorted(raw.get_children(root)) == [
        "config", "failover", "history", "initialize", "leader", "members", "status", "sync"
    ]  # fmt: skip
    assert sorted(raw.get_children(f"{root}/members")) == ["n0", "n1"]
    member = json.loads(raw.get(f"{root}/members/n0")[0])
    assert set(member) == {"conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version"}
    assert (member["role"], member["xlog_location"], member["timeline"]) == ("primary", 50331800, 2)
    assert member["conn_url"] == "postgres://replicator@n0:5432/postgres"
    assert json.loads(raw.get(f"{root}/members/n1")[0])["tags"] == {
        "failover_priority": 0, "nofailover": True, "nosync": True
    }  # fmt: skip
    assert raw.get(f"{root}/leader")[0] == b"n0"
    assert raw.get(f"{root}/initialize")[0] == b"7260000000000000001"
    assert json.loads(raw.get(f"{root}/config")[0]) == config
    assert json.loads(raw.get(f"{root}/status")[0]) == {"optime": 50331800}
    assert json.loads(raw.get(f"{root}/sync")[0]) == {"leader": "n0", "sync_standby": "n1"}
    assert json.loads(raw.get(f"{root}/failover")[0]) == {"leader": "n0", "member": "n1"}
    [[timeline, lsn, reason, at, new_leader]] = json.loads(raw.get(f"{root}/history")[0])
    assert (timeline, lsn, reason, new_leader, at[:2]) == (1, 50331648, "no recovery target specified", "n0", "20")

    # leader and members/<name> are ephemeral, bound to their writer's session; the rest is persistent.
    owner = {key: raw.get(f"{root}/{key}")[1].ephemeralOwner for key in ("leader", "members/n0", "members/n1")}
    assert owner["leader"] == owner["members/n0"] != 0
    assert owner["members/n1"] not in (0, owner["leader"])
    for key in ("initialize", "config", "status", "sync", "failover", "history"):
        assert raw.get(f"{root}/{key}")[1].ephemeralOwner == 0, key

    assert n1.clear_failover() is DONE
    assert n1.clear_failover() is DONE  # nothing to clear is fine
    n0.close()  # its session ends: its ephemeral znodes go at once
    assert raw.exists(f"{root}/leader") is None
    assert raw.exists(f"{root}/members/n0") is None
    snapshot = n1.read_cluster()
    assert snapshot is not None
    assert (snapshot.view.leader, snapshot.view.failover) == (None, None)
    assert [m.name for m in snapshot.view.members] == ["n1"]
    assert snapshot.view.initialize == "7260000000000000001"


def test_values_other_tools_wrote_are_reported_not_raised(
    make: Callable[..., ZooKeeperDcs], raw: KazooClient, root: str
) -> None:
    raw.create(f"{root}/members/x", b"\xff\xfe not UTF-8", makepath=True)
    raw.create(f"{root}/status", b"{not json")
    raw.create(f"{root}/optime/leader", b"1234", makepath=True)  # older Patroni's status
    snapshot = make("n0").read_cluster()
    assert snapshot is not None
    assert snapshot.view.members == ()
    assert snapshot.view.leader_wal_position == 1234
    assert any(problem.startswith("members/x") for problem in snapshot.problems)
    assert any(problem.startswith("status") for problem in snapshot.problems)


def test_an_empty_scope_reads_as_an_empty_cluster(make: Callable[..., ZooKeeperDcs]) -> None:
    snapshot = make("n0").read_cluster()
    assert snapshot is not None
    assert snapshot.view == ClusterView()
    assert (snapshot.config, snapshot.config_version) == (None, None)


# --- compare-and-swap -------------------------------------------------------------------------------------------


def test_compare_and_swap_conflicts(make: Callable[..., ZooKeeperDcs]) -> None:
    a, b = make("a"), make("b")
    assert a.set_config({"ttl": 30}, None) is DONE
    assert b.set_config({"ttl": 20}, None) is CONFLICT  # create-if-absent lost
    snapshot = b.read_cluster()
    assert snapshot is not None
    version = snapshot.config_version
    assert version is not None
    assert a.set_config({"ttl": 25}, version) is DONE
    assert b.set_config({"ttl": 10}, version) is CONFLICT  # stale version
    snapshot = b.read_cluster()
    assert snapshot is not None
    assert (snapshot.config, snapshot.config_version) == ({"ttl": 25}, version + 1)
    assert b.set_config({"ttl": 10}, snapshot.config_version) is DONE

    assert a.acquire_leader() is DONE
    assert a.acquire_leader() is DONE  # already ours: a refresh
    assert b.renew_leader() is CONFLICT
    assert b.release_leader() is CONFLICT
    assert a.renew_leader() is DONE
    assert a.release_leader() is DONE
    assert a.renew_leader() is CONFLICT  # nobody holds it
    assert a.release_leader() is CONFLICT
    assert b.acquire_leader() is DONE


def test_a_key_left_by_another_session_is_not_ours(
    make: Callable[..., ZooKeeperDcs], zk: ZooKeeperServer, raw: KazooClient, root: str
) -> None:
    """A leader key naming us but owned by another session (an earlier process of ours) is not held by us; a member
    key of another session (or a persistent one) is taken over as our ephemeral znode."""
    a = make("a")
    other = KazooClient(zk.connection_string)
    other.start(timeout=5)
    try:
        other.create(f"{root}/leader", b"a", ephemeral=True, makepath=True)
        other.create(f"{root}/members/a", b"{}", ephemeral=True, makepath=True)
        raw.create(f"{root}/members/b", b"{}")  # persistent
        assert a.renew_leader() is CONFLICT
        assert a.acquire_leader() is CONFLICT

        assert a.publish_member(record("a")) is DONE
        assert make("b").publish_member(record("b")) is DONE
        data, stat = raw.get(f"{root}/members/a")
        assert json.loads(data)["conn_url"] == record("a").conn_url
        assert stat.ephemeralOwner not in (0, other.client_id[0])
        assert raw.get(f"{root}/members/b")[1].ephemeralOwner not in (0, stat.ephemeralOwner)
    finally:
        other.stop()
        other.close()
    assert a.acquire_leader() is DONE  # the other session's key went with it
    assert raw.get(f"{root}/leader")[1].ephemeralOwner == stat.ephemeralOwner


def test_two_clients_racing_never_both_win(make: Callable[..., ZooKeeperDcs], raw: KazooClient, root: str) -> None:
    a, b = make("a"), make("b")
    by_name = {"a": a, "b": b}
    wins: dict[str, int] = {"a": 0, "b": 0}
    barrier = threading.Barrier(2)

    def race(operation: Callable[[ZooKeeperDcs], Outcome]) -> dict[str, Outcome]:
        results: dict[str, Outcome] = {}

        def run(name: str) -> None:
            barrier.wait()
            results[name] = operation(by_name[name])

        threads = [threading.Thread(target=run, args=(name,)) for name in by_name]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return results

    for _ in range(50):
        results = race(lambda dcs: dcs.race_for_initialize())
        assert sorted(results.values()) == [CONFLICT, DONE], results
        raw.delete(f"{root}/initialize")

        results = race(lambda dcs: dcs.acquire_leader())
        assert sorted(results.values()) == [CONFLICT, DONE], results
        winner = next(name for name, outcome in results.items() if outcome is DONE)
        wins[winner] += 1
        assert raw.get(f"{root}/leader")[0] == winner.encode()
        assert by_name[winner].release_leader() is DONE
    print(f"\nleader races won: {wins}")


# --- sessions and watches ---------------------------------------------------------------------------------------


def test_watch_wakes_on_another_clients_change(make: Callable[..., ZooKeeperDcs], raw: KazooClient, root: str) -> None:
    holder, watcher = make("holder"), make("watcher")
    start = time.monotonic()
    assert watcher.wait_for_leader_change(0.4) is False
    assert 0.35 < time.monotonic() - start < 1.0

    changes: list[tuple[str, Callable[[], object]]] = [
        ("created", holder.acquire_leader),
        ("rewritten", lambda: raw.set(f"{root}/leader", b"holder")),
        ("deleted", holder.release_leader),
    ]
    latencies = {}
    for what, change in changes:
        thread, box = watch_in_thread(watcher)
        changed_at = time.monotonic()
        change()
        thread.join(5)
        assert box.get("changed") is True, what
        latencies[what] = box["at"] - changed_at
    print("\nwatch wake-up after a change: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in latencies.items()))
    assert all(latency < 0.1 for latency in latencies.values()), latencies


HOLDER = textwrap.dedent(
    """
    import sys, time
    from adapters.dcs.settings import ZooKeeperSettings
    from adapters.dcs.zookeeper import ZooKeeperDcs

    port, scope, session = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    settings = ZooKeeperSettings(scope=scope, hosts=(("127.0.0.1", port),), session_timeout_s=session)
    dcs = ZooKeeperDcs("holder", settings, retry_timeout_s=5.0)
    outcome = dcs.acquire_leader()
    print("held" if outcome else f"not held: {outcome}", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_holder_loses_the_leader_key_after_its_session_timeout(
    make: Callable[..., ZooKeeperDcs], zk: ZooKeeperServer, raw: KazooClient, scope: str, root: str
) -> None:
    python = str(PYTHON) if PYTHON.exists() else "python3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [python, "-c", HOLDER, str(zk.port), scope, str(SESSION_S)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        line = holder.stdout.readline().decode().strip() if ready else "(no answer)"
        assert line == "held", line
        watcher = make("watcher")
        snapshot = watcher.read_cluster()
        assert snapshot is not None and snapshot.view.leader is not None
        assert snapshot.view.leader.holder == "holder"

        gone: dict[str, float] = {}

        def observe() -> None:  # an independent clock for the moment the server deleted the key
            while "at" not in gone and time.monotonic() - killed_at < 15:
                if raw.exists(f"{root}/leader") is None:
                    gone["at"] = time.monotonic()
                time.sleep(0.005)

        thread, box = watch_in_thread(watcher, timeout_s=15)
        killed_at = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        observer = threading.Thread(target=observe, daemon=True)
        observer.start()
        observer.join(16)
        thread.join(16)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stderr is not None:
            holder.stderr.close()
        if holder.stdout is not None:
            holder.stdout.close()

    assert "at" in gone, "the leader key outlived its holder's session"
    expiry = gone["at"] - killed_at
    wake = box["at"] - gone["at"]
    print(
        f"\nleader key gone {expiry:.2f} s after SIGKILL of its holder (session timeout {SESSION_S} s); "
        f"watcher woke {wake * 1000:+.1f} ms from the deletion"
    )
    assert 2.0 < expiry < SESSION_S + 2.0
    assert box.get("changed") is True
    assert wake < 0.1
    assert watcher.acquire_leader() is DONE


def test_a_lost_session_is_noticed_and_the_adapter_recovers(
    make: Callable[..., ZooKeeperDcs], zk: ZooKeeperServer, raw: KazooClient, root: str
) -> None:
    a = make("a")
    assert a.acquire_leader() is DONE
    assert a.publish_member(record("a")) is DONE
    old_session = raw.get(f"{root}/leader")[1].ephemeralOwner
    for _ in range(5):
        # ZooKeeper's way to expire a session on purpose: join it from another client, then close it.
        thief = KazooClient(zk.connection_string, client_id=a._client.client_id)  # type: ignore[union-attr]
        thief.start(timeout=5)
        thief.stop()
        thief.close()
        if raw.exists(f"{root}/leader") is None:  # the session is gone (a may have won it back: try again)
            break
    assert raw.exists(f"{root}/leader") is None
    assert raw.exists(f"{root}/members/a") is None

    assert a.renew_leader() is CONFLICT  # a new session: it must not think it still holds the key
    assert a.acquire_leader() is DONE  # re-acquiring creates the key again
    assert a.publish_member(record("a")) is DONE
    new_session = raw.get(f"{root}/leader")[1].ephemeralOwner
    assert new_session not in (0, old_session)
    assert raw.get(f"{root}/members/a")[1].ephemeralOwner == new_session


def test_a_shorter_session_than_asked_is_reported(
    make: Callable[..., ZooKeeperDcs], caplog: pytest.LogCaptureFixture
) -> None:
    asked = make("n0")
    assert asked.read_cluster() is not None
    assert asked.granted_session_timeout_s == SESSION_S
    clamped = make("n1", session_timeout_s=30.0)
    assert clamped.read_cluster() is not None
    assert clamped.granted_session_timeout_s == 10.0  # maxSessionTimeout: 20 x tickTime (500 ms)
    assert any(
        "zookeeper.session_timeout: asked for 30 s, the server granted 10 s" in r.getMessage() for r in caplog.records
    )
    clamped.set_ttl(30.0)
    assert clamped.lease_ttl_s() == 10.0  # the leader's deadline must follow the key's real lifetime


# --- failures ---------------------------------------------------------------------------------------------------


def test_an_unreachable_store_is_unavailable_within_retry_timeout(make: Callable[..., ZooKeeperDcs]) -> None:
    retry = 1.5
    start = time.monotonic()
    dcs = make("n0", hosts=(("127.0.0.1", free_port()),), retry_timeout_s=retry)
    assert time.monotonic() - start < 0.5  # connecting is lazy
    operations: list[tuple[str, Callable[[], object], object]] = [
        ("read", dcs.read_cluster, None),
        ("acquire", dcs.acquire_leader, UNAVAILABLE),
        ("member", lambda: dcs.publish_member(record("n0")), UNAVAILABLE),
        ("config", lambda: dcs.set_config({"ttl": 30}, 3), UNAVAILABLE),
    ]
    for what, operation, expected in operations:
        start = time.monotonic()
        assert operation() is expected, what
        elapsed = time.monotonic() - start
        assert retry * 0.9 <= elapsed < retry + 1.0, (what, elapsed)
    start = time.monotonic()
    assert dcs.wait_for_leader_change(0.3) is False
    assert time.monotonic() - start < 1.0
    start = time.monotonic()
    dcs.close()
    assert time.monotonic() - start < 2.0
    assert dcs.read_cluster() is None  # closed: still no exception


def test_recovers_when_the_server_starts_late_pauses_and_restarts(make: Callable[..., ZooKeeperDcs]) -> None:
    retry = 1.5
    port = free_port()
    # A 10 s session: kazoo itself would notice a hung server only after 2/3 of it (6.7 s), so an operation that
    # ends within retry_timeout shows the adapter's own bound.
    dcs = make("n0", hosts=(("127.0.0.1", port),), retry_timeout_s=retry, session_timeout_s=10.0)
    assert dcs.read_cluster() is None  # no server yet
    with ZooKeeperServer(port=port) as server:
        first = until(lambda: dcs.acquire_leader() is DONE, 10, "the first connection")
        assert dcs.publish_member(record("n0")) is DONE

        server.pause()  # a hung server: each operation still ends within retry_timeout
        try:
            start = time.monotonic()
            assert dcs.renew_leader() is UNAVAILABLE
            hung = time.monotonic() - start
            assert hung < retry + 1.0
        finally:
            server.resume()
        after_pause = until(lambda: dcs.acquire_leader() is DONE, 15, "recovery after a pause")

        server.kill()
        start = time.monotonic()
        assert dcs.read_cluster() is None
        assert time.monotonic() - start < retry + 1.0
        server.start()  # same port and data dir
        after_kill = until(lambda: dcs.read_cluster() is not None, 15, "recovery after a kill")
        assert dcs.acquire_leader() is DONE  # renewed, or re-created if the session was lost meanwhile
        assert dcs.publish_member(record("n0")) is DONE

        server.restart()
        after_restart = until(lambda: dcs.acquire_leader() is DONE, 15, "recovery after a restart")
        snapshot = dcs.read_cluster()
        assert snapshot is not None and snapshot.view.leader is not None
        assert snapshot.view.leader.holder == "n0"
    print(
        f"\nconnected {first:.2f} s after the server came up; hung server answered UNAVAILABLE in {hung:.2f} s; "
        f"working again {after_pause:.2f} s after the pause, {after_kill:.2f} s after kill + start, "
        f"{after_restart:.2f} s after restart()"
    )


# --- Exhibitor --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("static", ["none", "wrong"])
def test_exhibitor_supplies_the_hosts(make: Callable[..., ZooKeeperDcs], zk: ZooKeeperServer, static: str) -> None:
    hosts = () if static == "none" else (("127.0.0.1", free_port()),)
    with ExhibitorStub() as stub:
        stub.serve(["127.0.0.1"], zk.port)
        # The first Exhibitor host refuses connections (nothing on 127.0.0.2): the next one is asked.
        exhibitor = ExhibitorSettings(hosts=("127.0.0.2", "127.0.0.1"), port=stub.port, poll_interval_s=0.2)
        dcs = make("n0", hosts=hosts, exhibitor=exhibitor)
        assert dcs.publish_member(record("n0")) is DONE
        assert dcs.acquire_leader() is DONE
        assert dcs.hosts == (("127.0.0.1", zk.port),)
        snapshot = dcs.read_cluster()
        assert snapshot is not None and [m.name for m in snapshot.view.members] == ["n0"]


def test_a_bad_exhibitor_answer_keeps_the_previous_hosts(
    make: Callable[..., ZooKeeperDcs], zk: ZooKeeperServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ExhibitorStub() as stub:
        stub.serve(["127.0.0.1"], zk.port)
        dcs = make("n0", hosts=(), exhibitor=ExhibitorSettings(("127.0.0.1",), stub.port, poll_interval_s=0.1))
        assert dcs.publish_member(record("n0")) is DONE
        good = dcs.hosts
        answers: list[tuple[bytes | dict[str, Any], int, str]] = [
            (b"<html>Exhibitor is down</html>", 200, "not JSON"),
            ({"servers": "127.0.0.1", "port": zk.port}, 200, '"servers" must be a non-empty list'),
            ({"servers": ["127.0.0.1"]}, 200, "has no 'port'"),
            ({"servers": ["127.0.0.1"], "port": str(zk.port)}, 200, '"port" must be a port number'),
            ({"servers": ["127.0.0.1"], "port": zk.port}, 503, "HTTP 503"),
        ]
        for body, status, words in answers:
            caplog.clear()
            stub.body, stub.status = body, status

            def logged(words: str = words) -> bool:
                return any(
                    r.levelno >= logging.ERROR and "zookeeper.exhibitor" in r.getMessage() and words in r.getMessage()
                    for r in caplog.records
                )

            until(logged, 5, f"an error naming zookeeper.exhibitor and {words!r}")
            assert dcs.hosts == good
            assert dcs.publish_member(record("n0")) is DONE

        stub.serve(["localhost"], zk.port)  # a new, valid list is followed
        until(lambda: dcs.hosts == (("localhost", zk.port),), 5, "the new host list")
        assert dcs.read_cluster() is not None


def test_parse_cluster_list_accepts_exhibitors_answer() -> None:
    hosts = parse_cluster_list(b'{"servers": ["zk1", " zk2.example.com ", "::1"], "port": 2181}')
    assert hosts == (("zk1", 2181), ("zk2.example.com", 2181), ("::1", 2181))
    assert connection_string(hosts) == "zk1:2181,zk2.example.com:2181,[::1]:2181"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b'["zk1"]', 'expected a JSON object {"servers": [...], "port": N}, got list'),
        (b'{"port": 2181}', "has no 'servers'"),
        (b'{"servers": ["zk1"]}', "has no 'port'"),
        (b"{}", "has no 'servers' and 'port'"),
        (b'{"servers": "zk1", "port": 2181}', '"servers" must be a non-empty list'),
        (b'{"servers": [], "port": 2181}', '"servers" must be a non-empty list'),
        (b'{"servers": ["zk1", 7], "port": 2181}', '"servers" holds 7'),
        (b'{"servers": [""], "port": 2181}', "\"servers\" holds ''"),
        (b'{"servers": ["zk1,zk2"], "port": 2181}', "'zk1,zk2', which is not a host"),
        (b'{"servers": ["zk1/chroot"], "port": 2181}', "'zk1/chroot', which is not a host"),
        (b'{"servers": ["zk1:2181"], "port": 2181}', "'zk1:2181', which is not a host"),
        (b'{"servers": ["zk1"], "port": "2181"}', "\"port\" must be a port number, got '2181'"),
        (b'{"servers": ["zk1"], "port": true}', '"port" must be a port number, got True'),
        (b'{"servers": ["zk1"], "port": 70000}', '"port" must be a port number, got 70000'),
    ],
)
def test_parse_cluster_list_rejects_what_exhibitor_does_not_send(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_cluster_list(body)


def test_a_wait_wakes_at_once_for_a_change_since_the_last_read_but_not_for_its_own_renewal(
    make: Callable[..., ZooKeeperDcs],
) -> None:
    leader, follower = make("n0"), make("n1")
    assert leader.acquire_leader() is DONE
    assert follower.read_cluster() is not None
    assert leader.release_leader() is DONE  # changes after the follower's read, before it waits
    started = time.monotonic()
    assert follower.wait_for_leader_change(2.0) is True
    assert time.monotonic() - started < 0.1
    assert leader.acquire_leader() is DONE
    assert leader.read_cluster() is not None and leader.renew_leader() is DONE
    assert leader.wait_for_leader_change(0.3) is False  # its own renewal is not news
