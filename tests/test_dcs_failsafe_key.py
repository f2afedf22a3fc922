"""The `failsafe` key (Patroni's `/<namespace>/<scope>/failsafe`, `{"name": "api_url", ...}`) on each real backend:
etcd's v2 API, etcd's v3 API (an etcd with its default flags, v2 off) and ZooKeeper 3.8. What `Dcs.write_failsafe`
writes another tool reads as Patroni's JSON, as a permanent key; what Patroni writes, and a value no member could
have written, read back through `read_cluster` as the view's failsafe (sorted pairs) or as absent, logged."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from adapters.dcs import Dcs, EtcdSettings, Outcome, ZooKeeperSettings, connect
from tests.servers.etcd import EtcdServer
from tests.servers.zookeeper import ZooKeeperServer

MEMBERS = (("n0", "http://127.0.0.1:8008/patroni"), ("n1", "http://127.0.0.1:8009/patroni"))
PATRONI = '{"postgresql1":"https://10.0.0.2:8008/patroni","postgresql0":"https://10.0.0.1:8008/patroni"}'


@dataclass(frozen=True)
class Raw:
    """The key as another client of the store sees it."""

    value: str
    permanent: bool  # no TTL (v2), no lease (v3), not ephemeral (ZooKeeper): it outlives its writer


class Store:
    """One real server, the member settings that reach it, and a plain client's look at one key."""

    def __init__(self, server: EtcdServer | ZooKeeperServer) -> None:
        self.server = server

    def settings(self, scope: str) -> EtcdSettings | ZooKeeperSettings:
        raise NotImplementedError

    def get(self, path: str) -> Raw | None:
        raise NotImplementedError

    def set(self, path: str, value: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()


class EtcdV2(Store):
    def settings(self, scope: str) -> EtcdSettings:
        return EtcdSettings(scope, self.server.hosts)

    def _url(self, path: str) -> str:
        assert isinstance(self.server, EtcdServer)
        return f"{self.server.url}/v2/keys{path}"

    def get(self, path: str) -> Raw | None:
        try:
            with urllib.request.urlopen(self._url(path) + "?quorum=true", timeout=5) as answer:
                node = json.load(answer)["node"]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return Raw(node["value"], "ttl" not in node)

    def set(self, path: str, value: str) -> None:
        data = urllib.parse.urlencode({"value": value}).encode()
        urllib.request.urlopen(urllib.request.Request(self._url(path), data=data, method="PUT"), timeout=5).close()


class EtcdV3(Store):
    def settings(self, scope: str) -> EtcdSettings:
        return EtcdSettings(scope, self.server.hosts, api_version=3)

    def _gateway(self, method: str, **body: str) -> dict[str, Any]:
        assert isinstance(self.server, EtcdServer)
        coded = json.dumps({key: base64.b64encode(text.encode()).decode() for key, text in body.items()}).encode()
        request = urllib.request.Request(f"{self.server.url}/v3/kv/{method}", data=coded)
        with urllib.request.urlopen(request, timeout=5) as answer:
            return dict(json.load(answer))

    def get(self, path: str) -> Raw | None:
        found = self._gateway("range", key=path).get("kvs", [])
        if not found:
            return None
        return Raw(base64.b64decode(found[0].get("value", "")).decode(), "lease" not in found[0])

    def set(self, path: str, value: str) -> None:
        self._gateway("put", key=path, value=value)


class ZooKeeper(Store):
    def __init__(self, server: EtcdServer | ZooKeeperServer) -> None:
        super().__init__(server)
        assert isinstance(server, ZooKeeperServer)
        self.client = KazooClient(server.connection_string)
        self.client.start(timeout=10)

    def settings(self, scope: str) -> ZooKeeperSettings:
        return ZooKeeperSettings(scope, self.server.hosts, session_timeout_s=10)

    def get(self, path: str) -> Raw | None:
        try:
            data, stat = self.client.get(path)
        except NoNodeError:
            return None
        return Raw(data.decode(), stat.ephemeralOwner == 0)

    def set(self, path: str, value: str) -> None:
        self.client.ensure_path(path)
        self.client.set(path, value.encode())

    def close(self) -> None:
        self.client.stop()
        self.client.close()
        super().close()


def _start(kind: str) -> Store:
    if kind == "etcd2":
        return EtcdV2(EtcdServer("fs2"))
    if kind == "etcd3":
        return EtcdV3(EtcdServer("fs3", enable_v2=False))
    return ZooKeeper(ZooKeeperServer().start())


@pytest.fixture(scope="module", params=["etcd2", "etcd3", "zookeeper"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    started = _start(request.param)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def scope_and_dcs(store: Store) -> Iterator[tuple[str, Dcs]]:
    scope = f"fs-{uuid.uuid4().hex[:8]}"
    dcs = connect("n0", store.settings(scope), retry_timeout_s=5)
    try:
        yield scope, dcs
    finally:
        dcs.close()


def test_what_the_leader_writes_other_tools_read_as_patronis_permanent_key(
    store: Store, scope_and_dcs: tuple[str, Dcs], request: pytest.FixtureRequest
) -> None:
    scope, dcs = scope_and_dcs
    started = time.monotonic()
    assert dcs.write_failsafe(MEMBERS) is Outcome.DONE
    written_s = time.monotonic() - started
    raw = store.get(f"/service/{scope}/failsafe")
    assert raw is not None and raw.permanent  # Patroni's failsafe key outlives the leader that wrote it
    assert json.loads(raw.value) == {"n0": "http://127.0.0.1:8008/patroni", "n1": "http://127.0.0.1:8009/patroni"}
    started = time.monotonic()
    snapshot = dcs.read_cluster()
    read_s = time.monotonic() - started
    assert snapshot is not None and snapshot.view.failsafe == MEMBERS and snapshot.problems == ()
    assert dcs.write_failsafe(MEMBERS[1:]) is Outcome.DONE  # written whole: a member gone is gone from the key
    again = dcs.read_cluster()
    assert again is not None and again.view.failsafe == MEMBERS[1:]
    print(
        f"\n[timing] {request.node.callspec.id}: write_failsafe {written_s * 1000:.1f} ms, read {read_s * 1000:.1f} ms"
    )


def test_patronis_value_reads_sorted_and_a_malformed_one_as_absent_and_logged(
    store: Store, scope_and_dcs: tuple[str, Dcs], caplog: pytest.LogCaptureFixture
) -> None:
    scope, dcs = scope_and_dcs
    key = f"/service/{scope}/failsafe"
    store.set(key, PATRONI)
    snapshot = dcs.read_cluster()
    assert snapshot is not None and snapshot.view.failsafe == (
        ("postgresql0", "https://10.0.0.1:8008/patroni"),
        ("postgresql1", "https://10.0.0.2:8008/patroni"),
    )
    caplog.set_level(logging.WARNING, logger="adapters.dcs.base")
    for broken in ('["n0", "n1"]', '{"n0": 8008}'):
        store.set(key, broken)
        snapshot = dcs.read_cluster()
        assert snapshot is not None and snapshot.view.failsafe is None
        assert any(r.getMessage().startswith("DCS value ignored: failsafe: ") for r in caplog.records), broken
        caplog.clear()
    assert dcs.write_failsafe(()) is Outcome.DONE  # a key that lists nobody is not an absent one
    emptied = dcs.read_cluster()
    assert emptied is not None and emptied.view.failsafe == () and store.get(key) == Raw("{}", True)
