"""One contract for every DCS backend, against the real servers: etcd's v2 API (python-etcd), etcd's v3 API (the JSON
gateway, on an etcd started with its default flags, v2 off) and ZooKeeper 3.8.

Every test body runs on the three backends. What truly differs between them is data on the backend handle: how long
the short lease of the expiry tests lasts (an etcd TTL of 2 s, a ZooKeeper session of 4 s) and how another tool
reads and writes a key. Each real server starts once per backend (module scope) and every test works under its own
scope; a test that pauses or kills the server brings it back. Each backend's own cases are in test_dcs_etcd.py,
test_dcs_etcd3.py and test_dcs_zookeeper.py. Latencies are printed (run with -s to see them).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from adapters.dcs import Dcs, EtcdSettings, MemberRecord, Outcome, ZooKeeperSettings, connect
from fsm.observation import ClusterView, FailoverRequest, LeaderKey, Member, SyncState, Tags, TimelineSwitch
from tests.servers.common import free_port, wait_until
from tests.servers.etcd import EtcdServer
from tests.servers.zookeeper import ZooKeeperServer

DONE, CONFLICT, UNAVAILABLE = Outcome.DONE, Outcome.CONFLICT, Outcome.UNAVAILABLE
REPO = Path(__file__).resolve().parents[1]
TTL_S = 2.0  # etcd: TTLs and leases are whole seconds, expired by the raft leader every 500 ms
SESSION_S = 4.0  # ZooKeeper: the session is the lease; tickTime 500 ms allows 1 to 10 s
RENEW_EVERY_S = 0.2  # how often the holder process of the expiry test renews
PATRONI_MEMBER_FIELDS = {"conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version"}


# --- the backends: a real server, the clients' settings, and the keys as another tool sees them ---------------------


@dataclasses.dataclass(frozen=True)
class Stored:
    """One key as another tool reads it."""

    value: str
    version: int  # what a compare-and-swap matches: modifiedIndex (v2), mod_revision (v3), the znode's version
    leased: bool  # goes with a TTL (v2), a lease (v3) or its writer's session (ZooKeeper)


class Backend:
    """A backend under test: its server (started once for the module) and how to reach it."""

    name = ""
    lease_s = 30.0  # the clients' lease unless a test asks for the short one: keys outlive the test
    short_lease_s = TTL_S

    def __init__(self, server: EtcdServer | ZooKeeperServer) -> None:
        self.server = server

    def settings(self, scope: str, hosts: tuple[tuple[str, int], ...], lease_s: float) -> Any:
        raise NotImplementedError

    def tree(self, root: str) -> dict[str, Stored]:
        """Every key under `root`, named relative to it, as another client of the store reads it."""
        raise NotImplementedError

    def put(self, path: str, value: bytes) -> None:
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop what the test's raw reads opened."""


class Etcd2(Backend):
    """etcd's v2 keys API over plain HTTP, as etcdctl v2 or Patroni's `etcd:` reads it."""

    name = "etcd2"

    def settings(self, scope: str, hosts: tuple[tuple[str, int], ...], lease_s: float) -> EtcdSettings:
        return EtcdSettings(scope, hosts, ttl_s=lease_s)

    def _keys(self, method: str, path: str, query: str = "", data: bytes | None = None) -> dict[str, Any]:
        assert isinstance(self.server, EtcdServer)
        request = urllib.request.Request(f"{self.server.url}/v2/keys{path}{query}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())

    def tree(self, root: str) -> dict[str, Stored]:
        try:
            top = self._keys("GET", root, "?recursive=true&quorum=true")["node"]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return {}
            raise
        found: dict[str, Stored] = {}

        def walk(node: dict[str, Any]) -> None:
            for child in node.get("nodes", []):
                walk(child)
            if not node.get("dir"):
                found[node["key"][len(root) + 1 :]] = Stored(
                    node.get("value", ""), node["modifiedIndex"], "ttl" in node
                )

        walk(top)
        return found

    def put(self, path: str, value: bytes) -> None:
        self._keys("PUT", path, data=b"value=" + urllib.parse.quote_from_bytes(value).encode())

    def delete(self, path: str) -> None:
        self._keys("DELETE", path)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Etcd3(Backend):
    """etcd's v3 API through its JSON gateway, as etcdctl v3 or Patroni's `etcd3:` reads it."""

    name = "etcd3"

    def settings(self, scope: str, hosts: tuple[tuple[str, int], ...], lease_s: float) -> EtcdSettings:
        return EtcdSettings(scope, hosts, ttl_s=lease_s, api_version=3)

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.server, EtcdServer)
        return v3_call(self.server.url, method, body)

    def tree(self, root: str) -> dict[str, Stored]:
        prefix = root + "/"  # the range of every key that starts with it ends at root + "0" ("/" + 1)
        answer = self._call("/kv/range", {"key": _b64(prefix.encode()), "range_end": _b64(f"{root}0".encode())})
        return {
            base64.b64decode(kv["key"]).decode()[len(prefix) :]: Stored(
                base64.b64decode(kv.get("value", "")).decode(errors="replace"), int(kv["mod_revision"]), "lease" in kv
            )
            for kv in answer.get("kvs", [])
        }

    def put(self, path: str, value: bytes) -> None:
        self._call("/kv/put", {"key": _b64(path.encode()), "value": _b64(value)})

    def delete(self, path: str) -> None:
        self._call("/kv/deleterange", {"key": _b64(path.encode())})


def v3_call(url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One POST to etcd's v3 JSON gateway at `url` (`method`: /kv/range, ...)."""
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url}/v3{method}", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


class ZooKeeper(Backend):
    """ZooKeeper through a plain kazoo client, as zkCli or Patroni's `zookeeper:` reads it."""

    name = "zookeeper"
    lease_s = short_lease_s = SESSION_S

    def __init__(self, server: EtcdServer | ZooKeeperServer) -> None:
        super().__init__(server)
        self._client: KazooClient | None = None

    def settings(self, scope: str, hosts: tuple[tuple[str, int], ...], lease_s: float) -> ZooKeeperSettings:
        return ZooKeeperSettings(scope, hosts, session_timeout_s=lease_s)

    @property
    def client(self) -> KazooClient:
        if self._client is None:
            assert isinstance(self.server, ZooKeeperServer)
            self._client = KazooClient(self.server.connection_string)
            self._client.start(timeout=5)
        return self._client

    def tree(self, root: str) -> dict[str, Stored]:
        found: dict[str, Stored] = {}

        def walk(path: str, prefix: str) -> None:
            try:
                children = self.client.get_children(path)
            except NoNodeError:
                return
            for child in children:
                try:
                    data, stat = self.client.get(f"{path}/{child}")
                except NoNodeError:  # gone since it was listed
                    continue
                if stat.numChildren:
                    walk(f"{path}/{child}", f"{prefix}{child}/")
                else:
                    found[prefix + child] = Stored(
                        data.decode(errors="replace"), stat.version, stat.ephemeralOwner != 0
                    )

        walk(root, "")
        return found

    def put(self, path: str, value: bytes) -> None:
        if self.client.exists(path):
            self.client.set(path, value)
        else:
            self.client.create(path, value, makepath=True)

    def delete(self, path: str) -> None:
        self.client.delete(path)

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client.close()
            self._client = None


@pytest.fixture(scope="module", params=["etcd2", "etcd3", "zookeeper"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend's real server, started once for the module: v3 on etcd's default flags (no v2 API)."""
    kind: str = request.param
    with ZooKeeperServer() if kind == "zookeeper" else EtcdServer(enable_v2=kind == "etcd2") as server:
        yield {"etcd2": Etcd2, "etcd3": Etcd3, "zookeeper": ZooKeeper}[kind](server)


class Store:
    """One test's view of a backend: its own scope, clients of it (closed afterwards), its keys as stored."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.server = backend.server
        self.scope = f"s{uuid.uuid4().hex[:12]}"
        self.root = f"/service/{self.scope}"
        self._made: list[Dcs] = []

    def settings(self, lease_s: float | None = None, hosts: tuple[tuple[str, int], ...] | None = None) -> Any:
        hosts = tuple(self.backend.server.hosts) if hosts is None else hosts
        return self.backend.settings(self.scope, hosts, lease_s or self.backend.lease_s)

    def make(
        self,
        name: str,
        *,
        lease_s: float | None = None,
        retry_s: float = 3.0,
        hosts: tuple[tuple[str, int], ...] | None = None,
    ) -> Dcs:
        """A client for member `name` through `adapters.dcs.connect`, on this test's scope."""
        self._made.append(connect(name, self.settings(lease_s, hosts), retry_timeout_s=retry_s))
        return self._made[-1]

    def stored(self) -> dict[str, Stored]:
        return self.backend.tree(self.root)

    def get(self, key: str) -> Stored | None:
        return self.stored().get(key)

    def put(self, key: str, value: str | bytes) -> None:
        """Write `key` as another tool would: no lease, whatever it held."""
        self.backend.put(f"{self.root}/{key}", value.encode() if isinstance(value, str) else value)

    def delete(self, key: str) -> None:
        self.backend.delete(f"{self.root}/{key}")

    def gone_at(self, key: str, timeout_s: float) -> float | None:
        """When `key` was first seen missing (polled every 5 ms), or None if it stayed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.get(key) is None:
                return time.monotonic()
            time.sleep(0.005)
        return None

    def close(self) -> None:
        for dcs in self._made:
            dcs.close()
        self.backend.close()
        child = self.server.child
        if child is None or not child.alive:
            self.server.start()  # a test killed it and failed before it came back
        else:
            self.server.resume()  # harmless unless a test paused it and failed


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    made = Store(backend)
    yield made
    made.close()


def record(name: str, **fields: Any) -> MemberRecord:
    return MemberRecord(name, f"postgres://replicator@{name}:5432/postgres", f"http://{name}:8008/patroni", **fields)


class Watcher(threading.Thread):
    """Runs `wait_for_leader_change` in the background and notes when it returned."""

    def __init__(self, dcs: Dcs, timeout_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.dcs, self.timeout_s = dcs, timeout_s
        self.changed: bool | None = None
        self.woke_at = 0.0

    def run(self) -> None:
        self.changed = self.dcs.wait_for_leader_change(self.timeout_s)
        self.woke_at = time.monotonic()

    def started_watching(self) -> Watcher:
        self.start()
        time.sleep(0.3)  # its pre-read and watch request are in place well before this
        assert self.is_alive(), "the watcher returned before anything changed"
        return self


def until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `check` until true; the seconds it took."""
    started = time.monotonic()
    wait_until(check, timeout_s, what, interval_s=0.05)
    return time.monotonic() - started


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    return call(), time.monotonic() - started


# --- the layout --------------------------------------------------------------------------------------------------


def test_the_whole_cluster_round_trips_as_patroni_keys_and_json(store: Store) -> None:
    n0, n1 = store.make("n0"), store.make("n1")
    config = {"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}}
    primary = record("n0", role="primary", wal_position=50_000, timeline=2, tags=Tags(failover_priority=2))
    n1_tags = Tags(nofailover=True, nosync=True, failover_priority=0)
    replica = record("n1", state="streaming", wal_position=49_000, timeline=2, tags=n1_tags)
    history = (TimelineSwitch(1, 40_960, "no recovery target specified", new_leader="n0"),)
    scheduled = FailoverRequest("n0", "n1", scheduled_at="2026-01-01T00:00:00+00:00")
    assert n0.publish_member(primary) is DONE and n1.publish_member(replica) is DONE
    assert n0.race_for_initialize() is DONE and n1.race_for_initialize() is CONFLICT
    assert n0.set_initialize("7300000000000000001") is DONE
    assert n1.set_initialize("7300000000000000002") is CONFLICT  # no longer "" (claimed): set once
    assert n1.cancel_initialize() is CONFLICT
    assert n0.acquire_leader() is DONE and n1.acquire_leader() is CONFLICT
    assert n0.write_sync(SyncState("n0", "n1")) is DONE
    assert n0.write_history(history) is DONE
    assert n1.request_failover(scheduled) is DONE
    assert n0.publish_leader_optime(50_000) is DONE
    assert n0.set_config(config, None) is DONE

    stored = store.stored()
    for reader in (n0, n1):
        snapshot = reader.read_cluster()
        assert snapshot is not None
        assert snapshot.view == ClusterView(
            leader=LeaderKey("n0", stored["leader"].version),
            members=(
                Member(
                    "n0",
                    role="primary",
                    state="running",
                    wal_position=50_000,
                    timeline=2,
                    tags=primary.tags,
                    api_url=primary.api_url,
                    conn_url=primary.conn_url,
                ),
                Member(
                    "n1",
                    role="replica",
                    state="streaming",
                    wal_position=49_000,
                    timeline=2,
                    tags=n1_tags,
                    api_url=replica.api_url,
                    conn_url=replica.conn_url,
                ),
            ),
            initialize="7300000000000000001",
            failover=scheduled,
            sync=SyncState("n0", "n1"),
            leader_wal_position=50_000,
            history=(dataclasses.replace(history[0], at=snapshot.view.history[0].at),),  # the time it was written
        )
        assert (snapshot.config, snapshot.config_version, snapshot.problems) == (config, stored["config"].version, ())

    # What another Patroni-compatible tool sees.
    assert sorted(stored) == [
        "config", "failover", "history", "initialize", "leader", "members/n0", "members/n1", "status", "sync"
    ]  # fmt: skip
    member = json.loads(stored["members/n0"].value)
    assert set(member) == PATRONI_MEMBER_FIELDS
    assert (member["conn_url"], member["api_url"]) == (primary.conn_url, primary.api_url)
    assert (member["state"], member["role"], member["xlog_location"], member["timeline"]) == (
        "running",
        "primary",
        50_000,
        2,
    )
    assert member["tags"] == {"failover_priority": 2} and isinstance(member["version"], str)
    assert json.loads(stored["members/n1"].value)["tags"] == {
        "failover_priority": 0,
        "nofailover": True,
        "nosync": True,
    }
    assert stored["leader"].value == "n0" and stored["initialize"].value == "7300000000000000001"
    assert json.loads(stored["config"].value) == config
    assert json.loads(stored["status"].value) == {"optime": 50_000}
    assert json.loads(stored["sync"].value) == {"leader": "n0", "sync_standby": "n1"}
    assert json.loads(stored["failover"].value) == {
        "leader": "n0", "member": "n1", "scheduled_at": "2026-01-01T00:00:00+00:00"
    }  # fmt: skip
    [[timeline, lsn, reason, at, new_leader]] = json.loads(stored["history"].value)
    assert (timeline, lsn, reason, new_leader) == (1, 40_960, "no recovery target specified", "n0")
    assert abs(datetime.fromisoformat(at) - datetime.now(UTC)) < timedelta(minutes=1)  # stamped when written
    # The leader and member keys go with their writer's lease; the others stay.
    assert {key for key, node in stored.items() if node.leased} == {"leader", "members/n0", "members/n1"}

    assert n1.clear_failover() is DONE and n1.clear_failover() is DONE  # nothing left to clear is fine
    assert "failover" not in store.stored()


def test_an_empty_scope_reads_as_an_empty_cluster(store: Store) -> None:
    snapshot = store.make("n0").read_cluster()
    assert snapshot is not None
    assert (snapshot.view, snapshot.config, snapshot.config_version, snapshot.problems) == (
        ClusterView(),
        None,
        None,
        (),
    )


def test_malformed_values_from_other_tools_are_reported_not_raised(store: Store) -> None:
    n0 = store.make("n0")
    assert n0.publish_member(record("n0")) is DONE
    store.put("members/x", b"\xff\xfe not UTF-8")
    store.put("members/y", json.dumps({"timeline": "twelve", "role": "replica"}))
    store.put("members/z", "[1, 2]")
    store.put("status", "{not json")
    store.put("optime/leader", "1234")  # older Patroni's status, used when status is unreadable
    snapshot = n0.read_cluster()
    assert snapshot is not None
    print(f"\nproblems: {snapshot.problems}")
    assert [member.name for member in snapshot.view.members] == ["n0"]
    assert snapshot.view.leader_wal_position == 1234
    assert sorted(problem.split(":")[0] for problem in snapshot.problems) == [
        "members/x",
        "members/y",
        "members/z",
        "status",
    ]


# --- compare-and-swap: one winner --------------------------------------------------------------------------------


def test_the_initialize_race_has_one_winner_who_may_give_up_its_claim(store: Store) -> None:
    n0, n1 = store.make("n0"), store.make("n1")
    assert n0.set_initialize("1") is CONFLICT  # nobody claimed it
    assert n0.cancel_initialize() is CONFLICT
    assert n0.race_for_initialize() is DONE
    assert n1.race_for_initialize() is CONFLICT
    assert n1.cancel_initialize() is DONE  # the winner's initdb failed: the claim ("") is given up
    assert n1.race_for_initialize() is DONE
    assert n1.set_initialize("7300000000000000002") is DONE
    assert n0.set_initialize("7300000000000000003") is CONFLICT  # already set
    assert n0.cancel_initialize() is CONFLICT  # a set identifier is never cancelled
    assert n0.race_for_initialize() is CONFLICT
    stored = store.get("initialize")
    assert stored is not None and (stored.value, stored.leased) == ("7300000000000000002", False)


def race(first: Callable[[], Outcome], second: Callable[[], Outcome]) -> tuple[Outcome, Outcome]:
    """Both calls released at the same instant."""
    start = threading.Barrier(2)

    def run(call: Callable[[], Outcome]) -> Outcome:
        start.wait()
        return call()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(run, first), pool.submit(run, second)
        return a.result(), b.result()


def test_two_clients_racing_never_both_win(store: Store) -> None:
    by_name = {"a": store.make("a"), "b": store.make("b")}
    a, b = by_name.values()
    wins = {"a": 0, "b": 0}
    for _ in range(50):
        outcomes = race(a.race_for_initialize, b.race_for_initialize)
        assert sorted(outcomes) == [CONFLICT, DONE], outcomes
        store.delete("initialize")

        outcomes = race(a.acquire_leader, b.acquire_leader)
        assert sorted(outcomes) == [CONFLICT, DONE], outcomes
        winner = "a" if outcomes[0] is DONE else "b"
        stored = store.get("leader")
        assert stored is not None and stored.value == winner
        wins[winner] += 1
        assert by_name[winner].release_leader() is DONE
    print(f"\nleader races won: {wins}")


def test_renew_or_release_by_a_non_holder_conflicts_and_leaves_the_key(store: Store) -> None:
    holder, other = store.make("n0"), store.make("n1")
    assert holder.acquire_leader() is DONE
    before = store.get("leader")
    assert other.renew_leader() is CONFLICT
    assert other.release_leader() is CONFLICT
    assert store.get("leader") == before and before is not None and (before.value, before.leased) == ("n0", True)
    assert holder.acquire_leader() is DONE  # already its own: a refresh
    assert holder.renew_leader() is DONE and holder.release_leader() is DONE
    assert holder.renew_leader() is CONFLICT  # nobody holds it: renewing does not create it again
    assert holder.release_leader() is CONFLICT
    assert store.get("leader") is None
    assert other.acquire_leader() is DONE


def test_set_config_on_a_stale_version_conflicts(store: Store) -> None:
    n0, n1 = store.make("n0"), store.make("n1")
    assert n0.set_config({"ttl": 30}, None) is DONE
    assert n1.set_config({"ttl": 20}, None) is CONFLICT  # "create if absent" when it exists
    seen = n0.read_cluster()
    assert seen is not None and seen.config_version is not None
    assert n1.set_config({"ttl": 25}, seen.config_version) is DONE
    assert n0.set_config({"ttl": 40}, seen.config_version) is CONFLICT
    now = n0.read_cluster()
    stored = store.get("config")
    assert now is not None and stored is not None
    assert (now.config, now.config_version) == ({"ttl": 25}, stored.version) and stored.version != seen.config_version
    assert n0.set_config({"ttl": 40}, now.config_version) is DONE  # on the version it just read


# --- leases ------------------------------------------------------------------------------------------------------

# The holder of the expiry test is a process of its own, so that stopping it stops everything it does: on ZooKeeper
# the session is the lease and a live client keeps it whether the agent renews or not.
HOLDER = """
import pickle, sys, time
from adapters.dcs import connect
dcs = connect("holder", pickle.loads(bytes.fromhex(sys.argv[1])), retry_timeout_s=1.0)
print(dcs.acquire_leader(), flush=True)
while True:
    time.sleep(float(sys.argv[2]))
    dcs.renew_leader()
"""


def test_the_leader_key_expires_once_its_holder_stops_renewing_and_a_watcher_wakes_at_once(store: Store) -> None:
    lease_s = store.backend.short_lease_s
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pickle.dumps(store.settings(lease_s)).hex(), str(RENEW_EVERY_S)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        assert (holder.stdout.readline().strip() if ready else "(no answer)") == "done"
        time.sleep(3 * RENEW_EVERY_S)  # a few renewals: they keep the key a lease (a v2 swap without ttl= would not)
        held = store.get("leader")
        assert held is not None and (held.value, held.leased) == ("holder", True)
        holder.kill()
        killed_at = time.monotonic()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # Watching from now on: on etcd each renewal was a change of the key too.
    watcher = Watcher(store.make("n1"), timeout_s=lease_s + 3).started_watching()
    gone = store.gone_at("leader", lease_s + 3)
    watcher.join(5)
    assert gone is not None, "the leader key outlived its holder"
    expiry_s = gone - killed_at
    print(f"\nleader key gone {expiry_s:.2f} s after its holder was killed (lease {lease_s:g} s, renewed every "
          f"{RENEW_EVERY_S:g} s); watcher woke {(watcher.woke_at - gone) * 1000:+.1f} ms from the expiry")  # fmt: skip
    assert lease_s - RENEW_EVERY_S - 0.1 <= expiry_s <= lease_s + 1.0
    assert watcher.changed is True and abs(watcher.woke_at - gone) < 0.1
    assert watcher.dcs.acquire_leader() is DONE  # the next member takes over


def test_renewing_keeps_the_leader_key_past_its_lease(store: Store) -> None:
    lease_s = store.backend.short_lease_s
    holder = store.make("n0", lease_s=lease_s)
    assert holder.acquire_leader() is DONE
    started = time.monotonic()
    while time.monotonic() - started < lease_s + 0.5:  # outlives the first lease only if the renewals extend it
        time.sleep(0.4)
        assert holder.renew_leader() is DONE
        stored = store.get("leader")
        assert stored is not None and (stored.value, stored.leased) == ("n0", True)
    assert holder.acquire_leader() is DONE  # held already: acquiring renews
    snapshot = holder.read_cluster()
    assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"


# --- watching the leader key -------------------------------------------------------------------------------------


def test_a_watcher_wakes_at_once_when_another_client_changes_the_leader_key(store: Store) -> None:
    watcher_dcs, other = store.make("n1"), store.make("n0")
    changed, elapsed = timed(lambda: watcher_dcs.wait_for_leader_change(0.5))
    assert changed is False and 0.45 <= elapsed < 0.8  # nothing changes: it sleeps the whole timeout
    changes: list[tuple[str, Callable[[], object]]] = [
        ("created", other.acquire_leader),  # from absent
        ("rewritten", lambda: store.put("leader", "n0")),  # by another tool, to the same value
        ("deleted", other.release_leader),
    ]
    latencies = {}
    for what, change in changes:
        watcher = Watcher(watcher_dcs).started_watching()
        changed_at = time.monotonic()
        assert change() in (DONE, None), what
        watcher.join(5)
        assert watcher.changed is True, what
        latencies[what] = watcher.woke_at - changed_at
    print("\nwatch woke after a change: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in latencies.items()))
    assert max(latencies.values()) < 0.1, latencies


def test_a_wait_wakes_at_once_for_a_change_since_the_last_read_but_not_for_its_own_renewal(store: Store) -> None:
    leader, follower = store.make("n0"), store.make("n1")
    assert leader.acquire_leader() is DONE
    assert follower.read_cluster() is not None
    assert leader.release_leader() is DONE  # changes after the follower's read, before it waits
    changed, elapsed = timed(lambda: follower.wait_for_leader_change(2.0))
    assert changed is True and elapsed < 0.1
    assert leader.acquire_leader() is DONE
    assert leader.read_cluster() is not None and leader.renew_leader() is DONE
    changed, elapsed = timed(lambda: leader.wait_for_leader_change(0.3))
    assert changed is False and elapsed >= 0.25  # its own renewal is not news


# --- an unavailable store ----------------------------------------------------------------------------------------


def test_an_unreachable_store_is_unavailable_within_retry_timeout_without_an_exception(store: Store) -> None:
    retry_s = 0.6
    dcs, made_s = timed(lambda: store.make("n0", hosts=(("127.0.0.1", free_port()),), retry_s=retry_s))
    assert made_s < 0.5  # connecting is lazy
    assert isinstance(dcs, Dcs)
    operations: list[tuple[str, Callable[[], object], object]] = [
        ("read", dcs.read_cluster, None),
        ("acquire", dcs.acquire_leader, UNAVAILABLE),
        ("member", lambda: dcs.publish_member(record("n0")), UNAVAILABLE),
        ("config", lambda: dcs.set_config({"ttl": 30}, 3), UNAVAILABLE),
    ]
    took = {}
    for what, operation, expected in operations:
        answer, took[what] = timed(operation)
        assert answer is expected, what
    print("\nunreachable: " + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in took.items()))
    assert all(retry_s * 0.9 <= seconds < retry_s + 0.5 for seconds in took.values()), took
    changed, waited_s = timed(lambda: dcs.wait_for_leader_change(0.3))
    assert changed is False and waited_s < 0.6
    _, close_s = timed(dcs.close)
    assert close_s < 2.0
    assert dcs.read_cluster() is None  # closed: still no exception


def test_the_client_recovers_by_itself_when_the_store_comes_back(store: Store) -> None:
    retry_s = 1.5
    dcs = store.make("n0", retry_s=retry_s)
    assert dcs.acquire_leader() is DONE and dcs.publish_member(record("n0")) is DONE

    store.server.pause()  # a hung store: the operation still ends within retry_timeout
    try:
        renewed, hung_s = timed(dcs.renew_leader)
    finally:
        store.server.resume()
    assert renewed is UNAVAILABLE and retry_s * 0.9 <= hung_s < retry_s + 1.0
    after_pause_s = until(lambda: dcs.renew_leader() is DONE, 10, "the hold renewed after the pause")

    store.server.kill()
    snapshot, down_s = timed(dcs.read_cluster)
    assert snapshot is None and down_s < retry_s + 1.0
    late = store.make("n1", retry_s=0.3)  # made, and failed, while the store is down
    assert late.read_cluster() is None
    store.server.start()  # same ports and data
    after_start_s = until(lambda: dcs.read_cluster() is not None, 10, "a read after the restart")
    assert dcs.renew_leader() is DONE  # the outage was shorter than the lease: still the holder
    snapshot = dcs.read_cluster()
    assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
    assert [member.name for member in snapshot.view.members] == ["n0"]
    late_s = until(lambda: late.read_cluster() is not None, 10, "the late client's first read")
    print(f"\nhung store: renew UNAVAILABLE after {hung_s:.2f} s, renewed {after_pause_s:.2f} s after the pause; "
          f"read {after_start_s:.2f} s after the restart, the late client {late_s:.2f} s")  # fmt: skip
    assert after_pause_s < 3.0 and after_start_s < 3.0 and after_start_s + late_s < 3.0
