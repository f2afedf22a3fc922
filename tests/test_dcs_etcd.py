"""The etcd backend against real etcd servers: Patroni's keys and JSON, races with one winner, leases that expire,
watches that wake at once, and a store that dies, hangs or comes back without the agent seeing an exception.

Every test works under its own scope, so one etcd server serves most of them; the tests that kill or pause a server
start their own. Latencies are printed (run with -s to see them).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import etcd
import pytest

from adapters.dcs import EtcdSettings, MemberRecord, Outcome, connect
from adapters.dcs.etcd import EtcdDcs
from fsm.observation import ClusterView, FailoverRequest, LeaderKey, Member, SyncState, Tags, TimelineSwitch
from tests.servers.common import free_port
from tests.servers.etcd import EtcdCluster, EtcdServer

TTL = 2  # seconds: etcd's TTLs are whole seconds, expired by the raft leader every 500 ms
PATRONI_MEMBER_FIELDS = {"conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version"}

MakeDcs = Callable[..., EtcdDcs]


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    with EtcdServer() as started:
        yield started


@pytest.fixture
def raw(server: EtcdServer) -> etcd.Client:
    """A plain python-etcd client, as another tool would use it."""
    return etcd.Client(host=server.host, port=server.port)


@pytest.fixture
def scope() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make(server: EtcdServer, scope: str) -> Iterator[MakeDcs]:
    """`make(name, ttl=..., retry=...)`: a client of the shared server, in this test's scope; closed afterwards."""
    made: list[EtcdDcs] = []

    def build(name: str, ttl: float = 30, retry: float = 3.0) -> EtcdDcs:
        made.append(EtcdDcs(name, EtcdSettings(scope, server.hosts, ttl_s=ttl), retry))
        return made[-1]

    yield build
    for dcs in made:
        dcs.close()


def gone_at(raw: etcd.Client, path: str, timeout_s: float, interval_s: float = 0.005) -> float | None:
    """When `path` was first seen missing (polled every 5 ms), or None if it stayed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            raw.read(path)
        except etcd.EtcdKeyNotFound:
            return time.monotonic()
        time.sleep(interval_s)
    return None


class Watcher(threading.Thread):
    """Runs `wait_for_leader_change` in the background and notes when it returned."""

    def __init__(self, dcs: EtcdDcs, timeout_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.dcs, self.timeout_s = dcs, timeout_s
        self.changed: bool | None = None
        self.woke_at = 0.0

    def run(self) -> None:
        self.changed = self.dcs.wait_for_leader_change(self.timeout_s)
        self.woke_at = time.monotonic()

    def started_watching(self) -> Watcher:
        self.start()
        time.sleep(0.5)  # its pre-read and watch request are in place well before this
        assert self.is_alive(), "the watcher returned before anything changed"
        return self


# --- the layout on a real etcd ---------------------------------------------------------------------------------


def test_the_whole_cluster_round_trips_as_patroni_json(make: MakeDcs, raw: etcd.Client) -> None:
    n0, n1 = make("n0"), make("n1")
    primary = MemberRecord(
        "n0", "postgres://127.0.0.1:5432/postgres", "http://127.0.0.1:8008/patroni", "running", "primary", 50_000, 2,
        Tags(failover_priority=2),
    )  # fmt: skip
    replica = MemberRecord(
        "n1", "postgres://127.0.0.1:5433/postgres", "http://127.0.0.1:8009/patroni", "streaming", "replica", 49_000, 2,
        Tags(nosync=True),
    )  # fmt: skip
    history = (TimelineSwitch(1, 40_960, "no recovery target specified", new_leader="n0"),)
    assert n0.publish_member(primary) is Outcome.DONE and n1.publish_member(replica) is Outcome.DONE
    assert n0.race_for_initialize() is Outcome.DONE and n1.race_for_initialize() is Outcome.CONFLICT
    assert n0.set_initialize("7300000000000000001") is Outcome.DONE
    assert n0.acquire_leader() is Outcome.DONE and n1.acquire_leader() is Outcome.CONFLICT
    assert n0.write_sync(SyncState("n0", "n1")) is Outcome.DONE
    assert n0.write_history(history) is Outcome.DONE
    scheduled = FailoverRequest("n0", "n1", scheduled_at="2026-01-01T00:00:00+00:00")
    assert n1.request_failover(scheduled) is Outcome.DONE
    assert n0.publish_leader_optime(50_000) is Outcome.DONE
    assert n0.set_config({"ttl": 30, "loop_wait": 10, "synchronous_mode": True}, None) is Outcome.DONE

    snapshot = n1.read_cluster()
    assert snapshot is not None
    root = n0.root
    stored = {node.key[len(root) + 1 :]: node for node in raw.read(root, recursive=True).leaves}
    assert snapshot.view == ClusterView(
        leader=LeaderKey("n0", stored["leader"].modifiedIndex),
        members=(
            Member("n0", "primary", "running", 50_000, 2, primary.tags, primary.api_url, primary.conn_url),
            Member("n1", "replica", "streaming", 49_000, 2, replica.tags, replica.api_url, replica.conn_url),
        ),
        initialize="7300000000000000001",
        failover=scheduled,
        sync=SyncState("n0", "n1"),
        leader_wal_position=50_000,
        history=(dataclasses.replace(history[0], at=snapshot.view.history[0].at),),  # the time it was written
    )
    assert snapshot.config == {"ttl": 30, "loop_wait": 10, "synchronous_mode": True}
    assert snapshot.config_version == stored["config"].modifiedIndex and snapshot.problems == ()

    # What another Patroni-compatible tool sees in etcd.
    assert sorted(stored) == sorted(
        ["leader", "members/n0", "members/n1", "initialize", "sync", "history", "failover", "status", "config"]
    )
    member = json.loads(stored["members/n0"].value)
    assert set(member) == PATRONI_MEMBER_FIELDS
    assert (member["conn_url"], member["api_url"]) == (primary.conn_url, primary.api_url)
    assert (member["state"], member["role"], member["timeline"]) == ("running", "primary", 2)
    assert member["xlog_location"] == 50_000
    assert member["tags"] == {"failover_priority": 2} and isinstance(member["version"], str)
    assert json.loads(stored["members/n1"].value)["tags"] == {"failover_priority": 1, "nosync": True}
    assert stored["leader"].value == "n0" and stored["initialize"].value == "7300000000000000001"
    assert json.loads(stored["status"].value) == {"optime": 50_000}
    assert json.loads(stored["sync"].value) == {"leader": "n0", "sync_standby": "n1"}
    [[timeline, lsn, reason, at, new_leader]] = json.loads(stored["history"].value)
    assert (timeline, lsn, reason, new_leader) == (1, 40_960, "no recovery target specified", "n0")
    assert abs(datetime.fromisoformat(at) - datetime.now(UTC)) < timedelta(minutes=1)  # stamped when written
    assert json.loads(stored["failover"].value) == {
        "leader": "n0", "member": "n1", "scheduled_at": "2026-01-01T00:00:00+00:00"
    }  # fmt: skip
    # Leases: the leader and member keys expire with the TTL, the others stay.
    assert {key for key, node in stored.items() if node.ttl is not None} == {"leader", "members/n0", "members/n1"}
    assert all(0 < stored[key].ttl <= 30 for key in ("leader", "members/n0", "members/n1"))


def test_the_initialize_key_compares_on_its_empty_value(make: MakeDcs, raw: etcd.Client) -> None:
    """etcd v2 refuses an empty prevValue; claiming, cancelling and setting `initialize` still compare on ""."""
    n0, n1 = make("n0"), make("n1")
    assert n0.set_initialize("1") is Outcome.CONFLICT  # nobody claimed it
    assert n0.cancel_initialize() is Outcome.CONFLICT
    assert n0.race_for_initialize() is Outcome.DONE
    assert n1.cancel_initialize() is Outcome.DONE  # the winner's initdb failed: the claim is given up
    assert n1.race_for_initialize() is Outcome.DONE
    assert n1.set_initialize("7300000000000000002") is Outcome.DONE
    assert n0.set_initialize("7300000000000000003") is Outcome.CONFLICT  # already set
    assert n0.cancel_initialize() is Outcome.CONFLICT  # a set identifier is never cancelled
    assert raw.read(n0.root + "/initialize").value == "7300000000000000002"


def test_a_malformed_member_value_is_ignored_and_named(make: MakeDcs, raw: etcd.Client) -> None:
    n0 = make("n0")
    assert n0.publish_member(MemberRecord("n0", "postgres://h/postgres", "http://h/patroni")) is Outcome.DONE
    raw.write(n0.root + "/members/x", "{not json")
    raw.write(n0.root + "/members/y", json.dumps({"timeline": "twelve", "role": "replica"}))
    raw.write(n0.root + "/members/z", "[1, 2]")
    raw.write(n0.root + "/members/empty", None, dir=True)  # a directory is no member, and no problem either
    snapshot = n0.read_cluster()
    assert snapshot is not None
    assert [member.name for member in snapshot.view.members] == ["n0"]
    print(f"\nproblems: {snapshot.problems}")
    for key in ("members/x", "members/y", "members/z"):
        assert any(problem.startswith(key) for problem in snapshot.problems), key
    assert len(snapshot.problems) == 3


# --- compare-and-swap: one winner ----------------------------------------------------------------------------


def race(first: Callable[[], Outcome], second: Callable[[], Outcome]) -> tuple[Outcome, Outcome]:
    """Both calls released at the same instant."""
    start = threading.Barrier(2)

    def run(call: Callable[[], Outcome]) -> Outcome:
        start.wait()
        return call()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(run, first), pool.submit(run, second)
        return a.result(), b.result()


def test_two_clients_racing_never_both_win(make: MakeDcs, raw: etcd.Client) -> None:
    a, b = make("a"), make("b")
    winners = {"a": 0, "b": 0}
    for _ in range(50):
        outcomes = race(a.race_for_initialize, b.race_for_initialize)
        assert sorted(outcomes) == [Outcome.CONFLICT, Outcome.DONE], outcomes
        raw.delete(a.root + "/initialize")

        outcomes = race(a.acquire_leader, b.acquire_leader)
        assert sorted(outcomes) == [Outcome.CONFLICT, Outcome.DONE], outcomes
        winner = "a" if outcomes[0] is Outcome.DONE else "b"
        assert raw.read(a.root + "/leader").value == winner
        winners[winner] += 1
        raw.delete(a.root + "/leader")
    print(f"\nleader races won: {winners}")


def test_renew_by_a_non_holder_conflicts_and_leaves_the_key(make: MakeDcs, raw: etcd.Client) -> None:
    holder, other = make("n0"), make("n1")
    assert holder.acquire_leader() is Outcome.DONE
    before = raw.read(holder.root + "/leader")
    assert other.renew_leader() is Outcome.CONFLICT
    assert other.release_leader() is Outcome.CONFLICT
    after = raw.read(holder.root + "/leader")
    assert (after.value, after.modifiedIndex) == ("n0", before.modifiedIndex) and after.ttl is not None
    assert holder.renew_leader() is Outcome.DONE and holder.release_leader() is Outcome.DONE
    assert holder.renew_leader() is Outcome.CONFLICT  # nobody holds it: renewing does not re-create it
    with pytest.raises(etcd.EtcdKeyNotFound):
        raw.read(holder.root + "/leader")


def test_set_config_on_a_stale_version_conflicts(make: MakeDcs) -> None:
    n0, n1 = make("n0"), make("n1")
    assert n0.set_config({"ttl": 30}, None) is Outcome.DONE
    assert n1.set_config({"ttl": 20}, None) is Outcome.CONFLICT  # "create if absent" when it exists
    seen = n0.read_cluster()
    assert seen is not None and seen.config_version is not None
    assert n1.set_config({"ttl": 25}, seen.config_version) is Outcome.DONE
    assert n0.set_config({"ttl": 40}, seen.config_version) is Outcome.CONFLICT
    now = n0.read_cluster()
    assert now is not None and now.config == {"ttl": 25} and now.config_version != seen.config_version


# --- leases ----------------------------------------------------------------------------------------------------


def test_the_leader_key_expires_once_its_holder_stops_renewing(make: MakeDcs, raw: etcd.Client) -> None:
    holder = make("n0", ttl=TTL)
    assert holder.acquire_leader() is Outcome.DONE
    written = time.monotonic()
    gone = gone_at(raw, holder.root + "/leader", TTL + 2)
    assert gone is not None, "the leader key outlived its TTL"
    latency = gone - written
    print(f"\nleader key gone {latency:.3f} s after the last write (ttl {TTL} s)")
    assert TTL - 0.1 <= latency <= TTL + 1
    snapshot = holder.read_cluster()
    assert snapshot is not None and snapshot.view.leader is None


def test_renewing_keeps_the_ttl(make: MakeDcs, raw: etcd.Client) -> None:
    """A compare-and-swap without ttl= would make the key permanent: renewals must keep it a lease."""
    holder = make("n0", ttl=TTL)
    assert holder.acquire_leader() is Outcome.DONE
    started = time.monotonic()
    while time.monotonic() - started < TTL + 0.5:  # outlives the first TTL only if the renewals extend it
        time.sleep(0.4)
        assert holder.renew_leader() is Outcome.DONE
        node = raw.read(holder.root + "/leader")
        assert node.value == "n0" and node.ttl is not None and node.ttl <= TTL
    assert holder.acquire_leader() is Outcome.DONE  # held already: acquire renews, with the TTL too
    renewed = time.monotonic()
    gone = gone_at(raw, holder.root + "/leader", TTL + 2)
    assert gone is not None, "the leader key became permanent after a renewal"
    print(f"\nleader key gone {gone - renewed:.3f} s after the last renewal (ttl {TTL} s)")
    assert gone - renewed <= TTL + 1


# --- watching the leader key -----------------------------------------------------------------------------------


def test_a_watcher_wakes_at_once_when_another_client_changes_the_leader_key(make: MakeDcs) -> None:
    watcher_dcs, other = make("n1"), make("n0")
    latencies = []
    for change in (other.acquire_leader, other.release_leader):  # created (from absent), then deleted
        watcher = Watcher(watcher_dcs).started_watching()
        changed_at = time.monotonic()
        assert change() is Outcome.DONE
        watcher.join(5)
        assert watcher.changed is True
        latencies.append(watcher.woke_at - changed_at)
    print(f"\nwatch woke {latencies[0] * 1000:.1f} ms after a create, {latencies[1] * 1000:.1f} ms after a delete")
    assert max(latencies) < 0.1

    started = time.monotonic()
    assert watcher_dcs.wait_for_leader_change(0.5) is False  # nothing changes: it sleeps the whole timeout
    assert 0.45 <= time.monotonic() - started < 0.8


def test_a_watcher_wakes_at_once_when_the_leader_key_expires(make: MakeDcs, raw: etcd.Client) -> None:
    holder, watcher_dcs = make("n0", ttl=TTL), make("n1", ttl=TTL)
    assert holder.acquire_leader() is Outcome.DONE
    watcher = Watcher(watcher_dcs).started_watching()
    gone = gone_at(raw, holder.root + "/leader", TTL + 2)
    watcher.join(5)
    assert gone is not None and watcher.changed is True
    print(f"\nwatch woke {(watcher.woke_at - gone) * 1000:+.1f} ms from the expiry (polled every 5 ms)")
    assert abs(watcher.woke_at - gone) < 0.1


# --- an unavailable store ---------------------------------------------------------------------------------------


def test_an_unreachable_store_is_unavailable_without_an_exception(scope: str) -> None:
    settings = EtcdSettings(scope, (("127.0.0.1", free_port()),), ttl_s=TTL)
    dcs = connect("n0", settings, retry_timeout_s=1.0)
    assert isinstance(dcs, EtcdDcs)
    started = time.monotonic()
    assert dcs.read_cluster() is None
    read_s = time.monotonic() - started
    started = time.monotonic()
    assert dcs.acquire_leader() is Outcome.UNAVAILABLE
    acquire_s = time.monotonic() - started
    print(f"\nunreachable: read_cluster None after {read_s:.2f} s, acquire_leader UNAVAILABLE after {acquire_s:.2f} s")
    assert 0.9 <= read_s <= 2.0 and 0.9 <= acquire_s <= 2.0
    assert dcs.publish_member(MemberRecord("n0", "c", "a")) is Outcome.UNAVAILABLE
    started = time.monotonic()
    assert dcs.wait_for_leader_change(0.3) is False
    assert time.monotonic() - started < 0.6
    dcs.close()


def test_a_store_without_the_v2_api_is_unavailable_not_empty(scope: str) -> None:
    """etcd 3.4 answers a plain-text 404 when v2 is off: no "key not found", and so no empty cluster."""
    with EtcdServer(enable_v2=False) as v3_only:
        dcs = EtcdDcs("n0", EtcdSettings(scope, v3_only.hosts), retry_timeout_s=0.5)
        assert dcs.read_cluster() is None
        assert dcs.race_for_initialize() is Outcome.UNAVAILABLE
        dcs.close()


def test_the_client_recovers_by_itself_when_the_server_comes_back(scope: str) -> None:
    with EtcdServer() as own:
        dcs = EtcdDcs("n0", EtcdSettings(scope, own.hosts, ttl_s=30), retry_timeout_s=1.0)
        assert dcs.acquire_leader() is Outcome.DONE
        own.kill()
        assert dcs.read_cluster() is None
        assert dcs.renew_leader() is Outcome.UNAVAILABLE  # every member failed: python-etcd's list is empty now
        own.restart()
        started = time.monotonic()
        snapshot = dcs.read_cluster()
        assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
        assert dcs.renew_leader() is Outcome.DONE
        print(f"\nafter the restart the same client answered in {time.monotonic() - started:.3f} s")
        dcs.close()


def test_the_client_carries_on_when_its_member_of_a_cluster_is_killed(scope: str) -> None:
    with EtcdCluster() as cluster:
        doomed = cluster.leader()  # the harder case: the member in use is also the raft leader
        hosts = [doomed.hosts[0]] + [host for host in cluster.hosts if host != doomed.hosts[0]]
        dcs = EtcdDcs("n0", EtcdSettings(scope, tuple(hosts), ttl_s=30), retry_timeout_s=3.0)
        assert dcs.acquire_leader() is Outcome.DONE
        assert dcs.publish_member(MemberRecord("n0", "c", "a")) is Outcome.DONE
        doomed.kill()
        started = time.monotonic()
        assert dcs.renew_leader() is Outcome.DONE
        renew_s = time.monotonic() - started
        assert dcs.publish_member(MemberRecord("n0", "c", "a", wal_position=5)) is Outcome.DONE
        snapshot = dcs.read_cluster()
        assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
        assert snapshot.view.members[0].wal_position == 5
        # The next member holds a write forwarded to the dead raft leader until the request times out; the third
        # one answers once a new leader is elected.
        print(f"\nfirst member (raft leader) killed: renew DONE after {renew_s:.3f} s")
        assert renew_s < 2 * dcs.request_timeout_s
        dcs.close()


def test_the_client_recovers_when_a_quorum_comes_back_without_the_member_it_tried_last(scope: str) -> None:
    """python-etcd drops each member that fails and, with none left, gives up for good on the last one it tried
    ("No more machines in the cluster"): the client must try every configured member again."""
    with EtcdCluster() as cluster:
        dcs = EtcdDcs("n0", EtcdSettings(scope, tuple(cluster.hosts), ttl_s=30), retry_timeout_s=1.0)
        assert dcs.acquire_leader() is Outcome.DONE
        for member in cluster.members:
            member.kill()
        assert dcs.read_cluster() is None
        assert dcs._client is not None  # white box: which member python-etcd tried last
        last_tried = next(m for m in cluster.members if m.url == dcs._client.base_uri)
        for member in cluster.members:
            if member is not last_tried:
                member.restart(wait=False)
        for member in cluster.members:
            if member is not last_tried:
                member.wait_ready()
        snapshot = dcs.read_cluster()
        assert snapshot is not None and snapshot.view.leader == LeaderKey("n0", snapshot.view.leader.version)
        assert dcs.renew_leader() is Outcome.DONE
        dcs.close()


def test_a_hung_member_costs_one_request_timeout(scope: str) -> None:
    with EtcdCluster() as cluster:
        # A follower, so that the other two keep their raft leader: what is measured is the client alone.
        leader = cluster.leader()
        hung = next(member for member in cluster.members if member is not leader)
        hosts = [hung.hosts[0]] + [host for host in cluster.hosts if host != hung.hosts[0]]
        dcs = EtcdDcs("n0", EtcdSettings(scope, tuple(hosts), ttl_s=30), retry_timeout_s=3.0)
        timeout = dcs.request_timeout_s
        assert dcs.acquire_leader() is Outcome.DONE  # connected to the first member
        hung.pause()
        try:
            started = time.monotonic()
            assert dcs.renew_leader() is Outcome.DONE
            first_s = time.monotonic() - started
            started = time.monotonic()
            assert dcs.read_cluster() is not None
            next_s = time.monotonic() - started
        finally:
            hung.resume()
        print(f"\nfirst member paused: renew DONE after {first_s:.3f} s (request timeout {timeout:.2f} s), next read"
              f" {next_s:.3f} s")  # fmt: skip
        assert timeout * 0.9 <= first_s <= timeout * 1.5  # one timeout on the hung member, not four
        assert next_s < 0.3  # the client stays on the member that answered
        dcs.close()


def test_a_wait_wakes_at_once_for_a_change_since_the_last_read_but_not_for_its_own_renewal(make: MakeDcs):
    leader, follower = make("n0"), make("n1")
    assert leader.acquire_leader() is Outcome.DONE
    assert follower.read_cluster() is not None
    assert leader.release_leader() is Outcome.DONE  # changes after the follower's read, before it waits
    started = time.monotonic()
    assert follower.wait_for_leader_change(2.0) is True
    assert time.monotonic() - started < 0.1
    assert leader.acquire_leader() is Outcome.DONE
    assert leader.read_cluster() is not None and leader.renew_leader() is Outcome.DONE
    assert leader.wait_for_leader_change(0.3) is False  # its own renewal is not news
