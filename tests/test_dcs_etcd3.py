"""The etcd backend on etcd's v3 API (the JSON gateway): what only it does, against real etcd 3.4 servers started with
etcd's default flags (no v2 API), to show that `etcd3:` needs nothing more of etcd.

The contracts every backend keeps are in test_dcs_contract.py; a cluster whose members die or hang is in
test_dcs_etcd.py, one body for both APIs (its etcd3 cases run on members without the v2 API). Here: Patroni's v3
layout as a plain v3 client reads it, the leader key on a lease of its own, user and password authentication.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from adapters.dcs import EtcdSettings, MemberRecord, Outcome, connect
from adapters.dcs.etcd3 import Etcd3Dcs
from tests.servers.etcd import EtcdServer
from tests.test_dcs_contract import Watcher, v3_call

DONE, CONFLICT, UNAVAILABLE = Outcome.DONE, Outcome.CONFLICT, Outcome.UNAVAILABLE
TTL_S = 2


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    with EtcdServer(enable_v2=False) as started:
        yield started


@pytest.fixture
def scope() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


def kv(server: EtcdServer, key: str) -> dict[str, str] | None:
    """`key` as a plain v3 client reads it (a range on that one key); None when it is absent."""
    found = v3_call(server.url, "/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs", [])
    return found[0] if found else None


def value(entry: dict[str, str]) -> str:
    return base64.b64decode(entry.get("value", "")).decode()


def test_the_keys_are_patronis_v3_keys_and_the_leader_key_has_a_lease_of_its_own(
    server: EtcdServer, scope: str
) -> None:
    """Publishing the member key must not keep alive a leader key its holder stopped renewing."""
    dcs = Etcd3Dcs("n0", EtcdSettings(scope, server.hosts, ttl_s=TTL_S, api_version=3), retry_timeout_s=1.0)
    assert dcs.acquire_leader() is DONE
    acquired = time.monotonic()
    assert dcs.publish_member(MemberRecord("n0", "postgres://n0/postgres", "http://n0:8008/patroni")) is DONE
    leader, member = kv(server, f"/service/{scope}/leader"), kv(server, f"/service/{scope}/members/n0")
    assert leader is not None and member is not None
    assert value(leader) == "n0" and '"conn_url":"postgres://n0/postgres"' in value(member)
    assert leader["lease"] != member["lease"]
    for lease in (leader["lease"], member["lease"]):
        assert v3_call(server.url, "/lease/timetolive", {"ID": lease})["grantedTTL"] == str(TTL_S)

    while kv(server, f"/service/{scope}/leader") is not None and time.monotonic() - acquired < TTL_S + 2:
        assert dcs.publish_member(MemberRecord("n0", "postgres://n0/postgres", "http://n0:8008/patroni")) is DONE
        time.sleep(0.1)
    gone_s = time.monotonic() - acquired
    print(f"\nleader key gone {gone_s:.2f} s after it was written (ttl {TTL_S} s), the member key published meanwhile")
    assert TTL_S - 0.1 <= gone_s <= TTL_S + 1
    assert kv(server, f"/service/{scope}/members/n0") is not None
    assert dcs.renew_leader() is CONFLICT  # nobody holds it now
    assert dcs.acquire_leader() is DONE  # on a new lease
    dcs.close()


def test_credentials_work_against_an_etcd_without_authentication(server: EtcdServer, scope: str) -> None:
    """etcd answers the login "authentication is not enabled": go on without a token, as Patroni does."""
    settings = EtcdSettings(scope, server.hosts, api_version=3, username="regent", password="pw")
    dcs = connect("n0", settings, retry_timeout_s=1.0)
    assert dcs.acquire_leader() is DONE
    snapshot = dcs.read_cluster()
    assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
    dcs.close()


# --- user and password -----------------------------------------------------------------------------------------

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"  # Debian's etcd-client, which scripts/setup installs


@pytest.fixture(scope="module")
def secured() -> Iterator[EtcdServer]:
    """etcd with authentication on: root, and `regent` (password `pw`) allowed read-write under /service/ only.
    Tokens expire after 1 s unused (`--auth-token-ttl`; 300 s by default), so that a test sees one expire."""
    with EtcdServer(enable_v2=False, start=False) as started:
        started.argv += ["--auth-token-ttl", "1"]
        started.start()
        for command in (
            "user add root:rootpw --interactive=false",
            "user add regent:pw --interactive=false",
            "role add regent",
            "role grant-permission regent --prefix=true readwrite /service/",
            "user grant-role regent regent",
            "auth enable",
        ):
            subprocess.run(
                [ETCDCTL, "--endpoints", started.url, *command.split()],
                env={**os.environ, "ETCDCTL_API": "3"}, check=True, capture_output=True,
            )  # fmt: skip
        yield started


def test_a_user_and_password_log_in_and_a_wrong_password_is_named(
    secured: EtcdServer, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    retry_s = 0.5

    def client(name: str, password: str | None, namespace: str = "service") -> Etcd3Dcs:
        username = "regent" if password is not None else None
        settings = EtcdSettings(
            scope, secured.hosts, api_version=3, namespace=namespace, username=username, password=password
        )
        return Etcd3Dcs(name, settings, retry_timeout_s=retry_s)

    n0, n1 = client("n0", "pw"), client("n1", "pw")
    assert n0.acquire_leader() is DONE and n0.publish_member(MemberRecord("n0", "c", "a")) is DONE
    snapshot = n1.read_cluster()
    assert snapshot is not None and snapshot.view.leader is not None and snapshot.view.leader.holder == "n0"
    assert [member.name for member in snapshot.view.members] == ["n0"]
    watcher = Watcher(n1).started_watching()  # the watch stream carries the token too
    assert n0.release_leader() is DONE
    watcher.join(5)
    assert watcher.changed is True
    token = n0.gateway._token
    time.sleep(2.1)  # unused, the token expires (etcd looks every second): the next request logs in again
    assert n0.acquire_leader() is DONE and n0.gateway._token not in (None, token)

    caplog.clear()
    cases = [
        (client("n2", "wrong"), ("etcd refused the login of user 'regent'", "authentication failed")),
        (client("n3", None), ("user name is empty",)),  # no credentials at all
        (client("n4", "pw", namespace="other"), ("permission denied",)),  # outside its role
    ]
    for dcs, words in cases:
        for operation, expected in ((dcs.read_cluster, None), (dcs.acquire_leader, UNAVAILABLE)):
            started = time.monotonic()
            assert operation() is expected
            assert time.monotonic() - started < retry_s + 0.5
        warnings = [r.getMessage() for r in caplog.records if r.name == "adapters.dcs.base"]
        print(f"\n{warnings[-1]}")
        assert len(warnings) == 2 and all(word in w for word in words for w in warnings), warnings
        caplog.clear()
        dcs.close()
    n0.close()
    n1.close()
