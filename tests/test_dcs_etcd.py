"""The etcd backend: what only it does, against real etcd servers, on the v2 API (python-etcd) and, where the case is
etcd's own, on the v3 API too.

The contracts every backend keeps (Patroni's keys and JSON, races, leases, watches, an unreachable store) are in
test_dcs_contract.py, the v3 API's own cases in test_dcs_etcd3.py. Here: an etcd that serves no v2 API, a directory
among the member keys, and a cluster whose members die or hang, on both APIs (one body each, parametrized: python-etcd
alone handles them badly, dropping a failed member for good and retrying a hung one three times; the v3 client has
its own host rotation and timeouts).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from adapters.dcs import Dcs, EtcdSettings, MemberRecord, Outcome, connect
from adapters.dcs.etcd import EtcdDcs
from fsm.observation import LeaderKey
from tests.servers.etcd import EtcdCluster, EtcdServer
from tests.test_dcs_contract import v3_call

DONE, UNAVAILABLE = Outcome.DONE, Outcome.UNAVAILABLE


@pytest.fixture
def scope() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


def test_a_store_without_the_v2_api_is_unavailable_and_says_how_to_fix_it(
    scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd 3.4 answers a plain-text 404 when v2 is off: no "key not found", and so no empty cluster."""
    with EtcdServer(enable_v2=False) as v3_only:
        dcs = EtcdDcs("n0", EtcdSettings(scope, v3_only.hosts), retry_timeout_s=0.5)
        assert dcs.read_cluster() is None
        assert dcs.race_for_initialize() is UNAVAILABLE
        dcs.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "adapters.dcs.base"]
    assert len(warnings) == 2 and all("--enable-v2" in w and "`etcd3:`" in w for w in warnings), warnings


def test_a_directory_among_the_member_keys_is_neither_a_member_nor_a_problem(scope: str) -> None:
    with EtcdServer() as server:
        dcs = EtcdDcs("n0", EtcdSettings(scope, server.hosts))
        assert dcs.publish_member(MemberRecord("n0", "postgres://h/postgres", "http://h/patroni")) is DONE
        request = urllib.request.Request(
            f"{server.url}/v2/keys{dcs.root}/members/empty", data=b"dir=true", method="PUT"
        )
        urllib.request.urlopen(request, timeout=5).close()
        snapshot = dcs.read_cluster()
        assert snapshot is not None
        assert ([m.name for m in snapshot.view.members], snapshot.problems) == (["n0"], ())
        dcs.close()


# --- a cluster whose members die or hang (both APIs) -----------------------------------------------------------


@pytest.fixture(params=[2, 3], ids=["etcd2", "etcd3"])
def api_version(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def cluster(api_version: int) -> Iterator[EtcdCluster]:
    """Three members. For the v3 API they run on etcd's default flags, as `etcd3:` needs nothing more: EtcdCluster
    starts them with the v2 API on, so they start again without it."""
    with EtcdCluster() as started:
        if api_version == 3:
            for member in started.members:
                member.kill()
                member.argv.remove("--enable-v2=true")
            for member in started.members:
                member.start(wait=False)
            for member in started.members:
                member.wait_ready()
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{started.members[0].url}/v2/keys/", timeout=5)
        yield started


def raft_leader(cluster: EtcdCluster) -> EtcdServer:
    """The member that is raft leader now, as its v3 status says (the v3 API is on whatever the flags)."""
    for member in cluster.members:
        try:
            status = v3_call(member.url, "/maintenance/status", {})
        except OSError:
            continue
        if status["leader"] == status["header"]["member_id"]:
            return member
    raise RuntimeError("no etcd member is raft leader")


def client_on(cluster: EtcdCluster, first: EtcdServer, scope: str, api_version: int) -> Dcs:
    """A client whose first host is `first`, then the other members."""
    hosts = [first.hosts[0]] + [host for host in cluster.hosts if host != first.hosts[0]]
    return connect("n0", EtcdSettings(scope, tuple(hosts), ttl_s=30, api_version=api_version), retry_timeout_s=3.0)


def test_the_client_carries_on_when_its_member_of_a_cluster_is_killed(
    cluster: EtcdCluster, api_version: int, scope: str
) -> None:
    doomed = raft_leader(cluster)  # the harder case: the member in use is also the raft leader
    dcs = client_on(cluster, doomed, scope, api_version)
    assert dcs.acquire_leader() is DONE
    assert dcs.publish_member(MemberRecord("n0", "c", "a")) is DONE
    doomed.kill()
    started = time.monotonic()
    assert dcs.renew_leader() is DONE
    renew_s = time.monotonic() - started
    assert dcs.publish_member(MemberRecord("n0", "c", "a", wal_position=5)) is DONE
    snapshot = dcs.read_cluster()
    assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
    assert snapshot.view.members[0].wal_position == 5
    # The next member holds a write forwarded to the dead raft leader until a new one is elected (200 ms here).
    timeout_s: float = dcs.request_timeout_s  # type: ignore[attr-defined]
    print(f"\nfirst member (raft leader) killed: renew DONE after {renew_s:.3f} s (request timeout {timeout_s:.2f} s)")
    assert renew_s < 2 * timeout_s
    dcs.close()


def test_a_hung_member_costs_one_request_timeout(cluster: EtcdCluster, api_version: int, scope: str) -> None:
    # A follower, so that the other two keep their raft leader: what is measured is the client alone.
    leader = raft_leader(cluster)
    hung = next(member for member in cluster.members if member is not leader)
    dcs = client_on(cluster, hung, scope, api_version)
    timeout_s: float = dcs.request_timeout_s  # type: ignore[attr-defined]
    assert dcs.acquire_leader() is DONE  # connected to the first member
    hung.pause()
    try:
        started = time.monotonic()
        assert dcs.renew_leader() is DONE
        first_s = time.monotonic() - started
        started = time.monotonic()
        assert dcs.read_cluster() is not None
        next_s = time.monotonic() - started
    finally:
        hung.resume()
    print(f"\nfirst member paused: renew DONE after {first_s:.3f} s (request timeout {timeout_s:.2f} s), next read"
          f" {next_s:.3f} s")  # fmt: skip
    assert timeout_s * 0.9 <= first_s <= timeout_s * 1.5  # one timeout on the hung member, not four
    assert next_s < 0.3  # the client stays on the member that answered
    dcs.close()


def test_the_client_recovers_when_a_quorum_comes_back_without_the_member_it_tried_last(scope: str) -> None:
    """python-etcd drops each member that fails and, with none left, gives up for good on the last one it tried
    ("No more machines in the cluster"): the client must try every configured member again."""
    with EtcdCluster() as cluster:
        dcs = EtcdDcs("n0", EtcdSettings(scope, tuple(cluster.hosts), ttl_s=30), retry_timeout_s=1.0)
        assert dcs.acquire_leader() is DONE
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
        assert dcs.renew_leader() is DONE
        dcs.close()
