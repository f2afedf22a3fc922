"""The ZooKeeper backend (kazoo): what only it does, against a real ZooKeeper 3.8 (no mocks).

The contracts every backend keeps (Patroni's layout, races, leases, watches, an unreachable store, recovery) are in
test_dcs_contract.py. Here: the session as the lease (closing it, losing it, a key another session holds, a session
the server grants shorter than asked) and Exhibitor. One server serves the module; each test has its own scope.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from adapters.dcs.base import Outcome
from adapters.dcs.exhibitor import connection_string, parse_cluster_list
from adapters.dcs.settings import ExhibitorSettings, ZooKeeperSettings
from adapters.dcs.zookeeper import ZooKeeperDcs
from tests.servers.common import free_port
from tests.servers.zookeeper import ExhibitorStub, ZooKeeperServer
from tests.test_dcs_contract import SESSION_S, record, until

DONE, CONFLICT = Outcome.DONE, Outcome.CONFLICT


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


# --- the session is the lease ------------------------------------------------------------------------------------


def test_closing_ends_the_session_and_its_ephemeral_keys_go_at_once(
    make: Callable[..., ZooKeeperDcs], raw: KazooClient, root: str
) -> None:
    n0, n1 = make("n0"), make("n1")
    assert n0.acquire_leader() is DONE and n0.publish_member(record("n0")) is DONE
    assert n1.publish_member(record("n1")) is DONE and n1.set_config({"ttl": 30}, None) is DONE
    # leader and members/<name> are ephemeral znodes of their writer's session; the rest is persistent.
    owner = {key: raw.get(f"{root}/{key}")[1].ephemeralOwner for key in ("leader", "members/n0", "members/n1")}
    assert owner["leader"] == owner["members/n0"] != 0
    assert owner["members/n1"] not in (0, owner["leader"])
    assert raw.get(f"{root}/config")[1].ephemeralOwner == 0
    n0.close()  # its session ends: its ephemeral znodes go at once, not a session timeout later
    assert raw.exists(f"{root}/leader") is None
    assert raw.exists(f"{root}/members/n0") is None
    snapshot = n1.read_cluster()
    assert snapshot is not None and snapshot.view.leader is None
    assert [m.name for m in snapshot.view.members] == ["n1"] and snapshot.config == {"ttl": 30}


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
