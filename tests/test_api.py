"""The REST API against a real two-node cluster: etcd, PostgreSQL 15, and two agents wired by `runtime.cli.build`.

n0 bootstraps under test-driven turns, then both agents run their own loops (loop_wait 1 s) while the tests speak
HTTP to their APIs, as HAProxy and patronictl would. Tests that change roles run last: restart, reinitialize, and
finally a switchover to n1. A few edge cases that a live cluster cannot hold still for (a lagging standby, a stalled
loop) are checked on the pure functions behind the endpoints.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from adapters.dcs import EtcdSettings, MemberRecord, connect
from fsm import State
from fsm.observation import ClusterConfig, ClusterView, DataDir, LeaderKey, Member, PostgresState, Tags
from runtime.agent import Agent
from runtime.api import ApiServer
from runtime.api import http as http_plumbing
from runtime.api.node import NodeView, parse_lag
from runtime.api.requests import merge_patch, switchover_problem
from runtime.cli import build
from runtime.config import RegentConfig, RestApiSettings, WatchdogSettings
from runtime.config.settings import CtlSettings
from runtime.ctl.rest import CtlError
from runtime.ctl.rest import call as ctl_call
from runtime.peers import PeerClient, peer_tls
from tests.servers.common import free_port, wait_until
from tests.servers.etcd import EtcdServer
from tests.servers.postgres import PgNodes, query

SCOPE = "api-test"
AUTH = ("admin", "s3cret:pw")
TIMING = ClusterConfig(ttl_s=10, loop_wait_s=1, retry_timeout_s=3, safety_margin_s=1, primary_start_timeout_s=10)


@dataclass
class Node:
    name: str
    config: RegentConfig
    agent: Agent
    api: ApiServer
    loop: threading.Thread | None = None

    def run_loop(self) -> None:
        self.loop = threading.Thread(target=self.agent.run, name=f"agent-{self.name}", daemon=True)
        self.loop.start()


@dataclass
class Cluster:
    etcd: EtcdServer
    pg: PgNodes
    nodes: dict[str, Node] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def dcs_settings(self) -> EtcdSettings:
        return EtcdSettings(SCOPE, self.etcd.hosts, ttl_s=TIMING.ttl_s)

    def config(self, name: str) -> RegentConfig:
        port = free_port()  # a real port, so that the api_url members publish is right
        restapi = RestApiSettings("127.0.0.1", port, f"127.0.0.1:{port}", AUTH)
        return RegentConfig(
            name, TIMING, self.dcs_settings(), self.pg.settings(name), restapi, WatchdogSettings("off")
        )  # the fence would kill Postgres whenever a test holds a turn back

    def add(self, name: str) -> Node:
        config = self.config(name)
        agent, api = build(config)
        api.switchover_wait_s = 20.0
        self.nodes[name] = node = Node(name, config, agent, api)
        return node

    def close(self) -> None:
        for node in self.nodes.values():
            node.api.stop()
            node.agent.shutdown()
        for node in self.nodes.values():
            if node.loop is not None:
                node.agent.stopped.wait(20)
                node.loop.join(5)
            node.agent.executor.postgres.stop("immediate")
            node.agent.executor.postgres.control.reap()
            node.agent.executor.callbacks.close()
            node.agent.executor.fence.close()  # type: ignore[attr-defined]
            node.agent.dcs.close()


def step_until(agent: Agent, done: Any, turns: int = 30) -> None:
    for _ in range(turns):
        agent.step()
        if done():
            return
    last = agent.turns[-1]
    raise AssertionError(f"{agent.name} stuck: {last.decision.log_line(last.before)}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with EtcdServer("api") as etcd, PgNodes(SCOPE) as pg:
        made = Cluster(etcd, pg)
        try:
            n0 = made.add("n0")
            step_until(n0.agent, lambda: n0.agent.state is State.LEADER and bool(n0.agent.postgres.writable))
            n0.api.start()
            n0.run_loop()
            n1 = made.add("n1")
            n1.api.start()
            n1.run_loop()
            wait_until(lambda: is_replica(n1) and streams_to(n0, "n1"), 30, "n1 streaming from n0")
            yield made
        finally:
            made.close()


# --- HTTP -------------------------------------------------------------------------------------------------------


def test_the_readme_reference_lists_every_endpoint_with_its_methods(cluster: Cluster) -> None:
    rows = {}
    for line in (Path(__file__).parents[1] / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`/"):
            methods = tuple(sorted(method.strip(" *") for method in cells[1].split(",")))
            rows.update({path.strip("` "): methods for path in cells[0].split(",")})
    assert rows == cluster.nodes["n0"].api.endpoints()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def message(self) -> str:
        return str(self.json["message"])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    auth: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {**({"Authorization": basic(*auth)} if auth else {}), **(headers or {})}
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def member_key(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.etcd.value(f"/service/{SCOPE}/members/{name}") or "{}"))


def in_seconds(seconds: float) -> str:
    """A time `seconds` from now, as patronictl sends it (ISO 8601 with a zone)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def get(node: Node, path: str, method: str = "GET") -> Answer:
    return call(node.api.port, method, path)


def admin(node: Node, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    return call(node.api.port, method, path, body, auth=AUTH, headers=headers)


def is_replica(node: Node) -> bool:
    return get(node, "/replica").status == 200


def is_primary(node: Node) -> bool:
    return get(node, "/primary").status == 200


def streams_to(node: Node, standby: str) -> bool:
    status = get(node, "/patroni").json
    return any(r["application_name"] == standby and r["state"] == "streaming" for r in status.get("replication", []))


# --- health checks ------------------------------------------------------------------------------------------------

EXPECTED = {  # path: (status on the leader n0, status on the replica n1)
    "/": (200, 503),
    "/primary": (200, 503),
    "/master": (200, 503),
    "/read-write": (200, 503),
    "/leader": (200, 503),
    "/replica": (503, 200),
    "/read-only": (200, 200),
    "/sync": (503, 503),
    "/async": (503, 200),
    "/health": (200, 200),
    "/liveness": (200, 200),
    "/readiness": (200, 200),
}


def test_health_checks_answer_by_role_on_get_head_and_options(cluster: Cluster) -> None:
    wrong = []
    for path, expected in EXPECTED.items():
        for node, status in zip((cluster["n0"], cluster["n1"]), expected, strict=True):
            for method in ("GET", "HEAD", "OPTIONS"):
                answer = get(node, path, method)
                if answer.status != status:
                    wrong.append(f"{method} {path} on {node.name}: {answer.status}, expected {status}")
                if method != "GET" and answer.raw:
                    wrong.append(f"{method} {path} on {node.name} has a body: {answer.raw[:60]!r}")
    assert wrong == []
    answer = get(cluster["n0"], "/primary")
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json["role"] == "primary" and answer.json["ha_state"] == "leader"


def test_replica_lag_threshold(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    assert get(n1, "/replica?lag=16MB").status == 200
    assert get(n1, "/replica?lag=1048576").status == 200
    bad = get(n1, "/replica?lag=lots")
    assert bad.status == 400 and "lag" in bad.message
    assert parse_lag("16MB") == 16 << 20 and parse_lag("2 kB") == 2048 and parse_lag("7") == 7
    # A standby 2 MiB behind the leader's published position, judged by the same functions /replica uses.
    view = ClusterView(leader=LeaderKey("n0"), leader_wal_position=10 << 20)
    pg = PostgresState(DataDir.VALID, running=True, in_recovery=True, wal_received=8 << 20, following="n0")
    lagging = NodeView("n1", SCOPE, State.FOLLOWER, pg, True, view, TIMING)
    assert lagging.lag_bytes == 2 << 20
    assert lagging.replica() and lagging.replica(2 << 20) and not lagging.replica(1 << 20)
    assert not dataclasses.replace(lagging, pg=dataclasses.replace(pg, following=None)).replica()


def test_liveness_needs_a_recent_turn() -> None:
    pg = PostgresState(DataDir.VALID, running=True)
    node = NodeView("n0", SCOPE, State.LEADER, pg, True, ClusterView(), TIMING, loop_age_s=12.0)
    assert node.alive  # 2 x loop_wait + ttl = 12 s
    assert not dataclasses.replace(node, loop_age_s=12.5).alive


def test_a_crashed_leader_is_not_primary_even_before_its_next_turn() -> None:
    view = ClusterView(leader=LeaderKey("n0"))
    pg = PostgresState(DataDir.VALID, running=True)
    node = NodeView("n0", SCOPE, State.LEADER, pg, True, view, TIMING, lease_left_s=5.0)
    assert node.primary
    assert not dataclasses.replace(node, running=False).primary  # the live postmaster check
    assert not dataclasses.replace(node, lease_left_s=-0.1).primary  # past its own deadline
    assert not dataclasses.replace(node, view=ClusterView(leader=LeaderKey("n1"))).primary


# --- status documents -------------------------------------------------------------------------------------------


def test_patroni_status_of_leader_and_replica(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    leader = get(n0, "/patroni").json
    system_id = n0.agent.executor.postgres.observe().system_identifier
    assert leader["state"] == "running" and leader["role"] == "primary" and leader["ha_state"] == "leader"
    assert leader["patroni"]["scope"] == SCOPE and leader["patroni"]["name"] == "n0"
    assert leader["timeline"] == 1 and leader["xlog"]["location"] > 0
    assert leader["database_system_identifier"] == system_id and leader["server_version"] >= 150000
    assert [r["application_name"] for r in leader["replication"]] == ["n1"]
    assert leader["tags"] == {"nofailover": False, "nosync": False, "failover_priority": 1}
    replica = get(n1, "/patroni").json
    assert replica["role"] == "replica" and replica["ha_state"] == "follower" and replica["leader"] == "n0"
    assert replica["xlog"]["received_location"] > 0 and replica["xlog"]["replayed_location"] > 0
    assert replica["database_system_identifier"] == system_id


def test_cluster_lists_members_with_roles(cluster: Cluster) -> None:
    def members() -> dict[str, Any]:
        return {m["name"]: m for m in get(cluster["n1"], "/cluster").json["members"]}

    # a standby shows its replication state, as Patroni's does, once a turn of it has seen its WAL receiver stream
    wait_until(lambda: members()["n1"]["state"] == "streaming", 15, "n1 shown streaming")
    n0, n1 = members()["n0"], members()["n1"]
    assert n0["role"] == "leader" and n1["role"] == "replica" and "lag" not in n0
    assert n0["state"] == "running" and n0["timeline"] == n1["timeline"] == 1
    assert n0["port"] == cluster.pg.settings("n0").port and n0["host"] == "127.0.0.1"
    assert n1["api_url"] == f"http://127.0.0.1:{cluster['n1'].api.port}/patroni"
    assert isinstance(n1["lag"], int) and n1["lag"] >= 0


def test_decision_shows_the_last_rule_and_turns(cluster: Cluster) -> None:
    decision = get(cluster["n0"], "/decision").json
    assert decision["state"] == "leader" and decision["rule"] == "lead_steady" and decision["why"]
    assert 1 <= len(decision["decisions"]) <= 50
    newest = decision["decisions"][0]
    assert newest["before"] == newest["after"] == "leader" and newest["failed"] == []
    types = [action["type"] for action in newest["actions"]]
    assert types[0] == "RenewLeaderKey" and "PublishMember" in types
    published = next(action for action in newest["actions"] if action["type"] == "PublishMember")
    assert published["role"] == "primary" and published["state"] == "leader"
    assert set(newest["succeeded"]) == set(types)
    rules = {turn["rule"] for turn in decision["decisions"]}
    assert rules <= {"lead_steady", "cand_won_init", "boot_won_init", "boot_race_init"}


def test_metrics_in_prometheus_text(cluster: Cluster) -> None:
    answer = get(cluster["n0"], "/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in answer.raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    labels = f'scope="{SCOPE}",name="n0"'
    assert samples[f"regent_primary{{{labels}}}"] == 1 and samples[f"regent_replica{{{labels}}}"] == 0
    assert samples[f"regent_leader{{{labels}}}"] == 1 and samples[f"regent_postgres_running{{{labels}}}"] == 1
    assert samples[f"regent_timeline{{{labels}}}"] == 1 and samples[f"regent_xlog_location{{{labels}}}"] > 0
    assert 0 < samples[f"regent_lease_seconds_left{{{labels}}}"] <= TIMING.ttl_s
    assert samples[f'regent_ha_state{{{labels},state="leader"}}'] == 1
    assert samples[f'regent_ha_state{{{labels},state="follower"}}'] == 0
    assert samples[f'regent_decisions_total{{{labels},rule="lead_steady"}}'] >= 1
    # Patroni's names alongside, with Patroni's meanings: dashboards and alerts written for it work
    assert samples[f"patroni_primary{{{labels}}}"] == 1 and samples[f"patroni_replica{{{labels}}}"] == 0
    assert samples[f"patroni_xlog_location{{{labels}}}"] == samples[f"regent_xlog_location{{{labels}}}"]
    assert samples[f"patroni_postgres_running{{{labels}}}"] == 1 and samples[f"patroni_is_paused{{{labels}}}"] == 0
    assert samples[f"patroni_postgres_timeline{{{labels}}}"] == 1 and samples[f"patroni_version{{{labels}}}"] > 0
    streaming = 'patroni_postgres_streaming{scope="api-test",name="n1"} 1'
    wait_until(lambda: streaming in get(cluster["n1"], "/metrics").raw.decode(), 15, "n1's turn seeing it stream")
    replica = get(cluster["n1"], "/metrics").raw.decode()
    assert 'regent_replica{scope="api-test",name="n1"} 1' in replica
    assert 'patroni_replica{scope="api-test",name="n1"} 1' in replica
    assert 'patroni_xlog_location{scope="api-test",name="n1"} 0' in replica


# --- requests and their errors ----------------------------------------------------------------------------------


def test_unsafe_methods_need_the_right_credentials(cluster: Cluster) -> None:
    port = cluster["n0"].api.port
    for auth in (None, ("admin", "wrong"), ("other", AUTH[1])):
        answer = call(port, "POST", "/reload", auth=auth)
        assert answer.status == 401, auth
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert "message" in answer.json
    assert call(port, "PATCH", "/config", {"x": 1}).status == 401
    assert call(port, "DELETE", "/restart").status == 401 and call(port, "DELETE", "/switchover").status == 401
    assert call(port, "GET", "/config").status == 200  # reads need none
    assert call(port, "POST", "/reload", auth=AUTH).status == 200


def test_malformed_requests_get_400_with_a_message(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    cases = {
        b"{not json": "malformed JSON",
        b"[1, 2]": "expected a JSON object",
        b"": "expected a JSON object",
        json.dumps({"candidate": "n1"}).encode(): "needs the current leader",
        json.dumps({"leader": "n0", "candidate": 7}).encode(): "candidate",
        json.dumps({"leader": "n0", "candidate": "n1", "color": "red"}).encode(): "unknown keys: color",
        json.dumps({"leader": "n0", "candidate": "n0"}).encode(): "same",
    }
    for body, words in cases.items():
        answer = admin(n0, "POST", "/switchover", body)
        assert (answer.status, words in answer.message) == (400, True), (body, answer.raw)
    failover = admin(n0, "POST", "/failover", {"leader": None})
    assert failover.status == 400 and "candidate" in failover.message
    bad_times = {  # the status Patroni answers with
        "soon": (422, "not an ISO 8601 time"),
        7: (400, "expected an ISO 8601 time with a zone"),
        "2099-01-01T00:00:00": (400, "give a time zone"),
        "2000-01-01T00:00:00+00:00": (422, "in the past"),
    }
    for text, (status, words) in bad_times.items():
        switchover = admin(n0, "POST", "/switchover", {"leader": "n0", "candidate": "n1", "scheduled_at": text})
        assert (switchover.status, words in switchover.message) == (status, True), (text, switchover.raw)
        restart = admin(n0, "POST", "/restart", {"schedule": text})
        assert (restart.status, words in restart.message) == (status, True), (text, restart.raw)
    null = admin(n0, "POST", "/restart", {"schedule": None})  # not a restart now (a null scheduled_at is: Patroni's)
    assert null.status == 400 and "expected an ISO 8601 time with a zone" in null.message
    later = in_seconds(60)
    failover = admin(n0, "POST", "/failover", {"candidate": "n1", "scheduled_at": later})
    assert failover.status == 400 and "cannot be scheduled" in failover.message
    assert admin(n0, "POST", "/restart", {"schedule": later, "role": "standby"}).status == 400
    assert admin(n0, "POST", "/restart", {"schedule": later, "postgres_version": "16"}).status == 501
    assert n0.agent.scheduled_restart is None  # none of them was scheduled
    assert admin(n0, "DELETE", "/restart").status == 404 and admin(n0, "DELETE", "/switchover").status == 404
    assert admin(n0, "POST", "/restart", {"role": "standby"}).status == 400
    assert admin(n0, "POST", "/restart", {"timeout": "soon"}).status == 400
    assert admin(n0, "POST", "/reinitialize", {"force": "yes"}).status == 400
    assert n0.agent.snapshot is not None and n0.agent.snapshot.view.failover is None  # nothing was written


def test_switchover_to_an_unfit_candidate_is_refused_naming_why(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    missing = admin(n0, "POST", "/switchover", {"leader": "n0", "candidate": "n9"})
    assert missing.status == 412 and "n9 does not exist" in missing.message
    wrong_leader = admin(n0, "POST", "/switchover", {"leader": "n1", "candidate": "n0"})
    assert wrong_leader.status == 412 and "leader name does not match" in wrong_leader.message
    already = admin(n0, "POST", "/failover", {"candidate": "n0"})
    assert already.status == 412 and "already the leader" in already.message
    ghost = connect("ghost", cluster.dcs_settings(), TIMING.retry_timeout_s)
    try:  # a member that published itself stopped and tagged nofailover (its key expires with the TTL)
        record = MemberRecord("ghost", "postgres://replicator@127.0.0.1:1/postgres", "", state="stopped")
        assert ghost.publish_member(dataclasses.replace(record, tags=Tags(nofailover=True)))
        unfit = admin(n0, "POST", "/switchover", {"leader": "n0", "candidate": "ghost"})
        assert unfit.status == 412, unfit.raw
        assert "tags forbid promotion" in unfit.message and "not running (state stopped)" in unfit.message
        snapshot = ghost.read_cluster()
        assert snapshot is not None and snapshot.view.failover is None  # refused before writing anything
    finally:
        ghost.close()


def test_switchover_problem_names_each_members_disqualifying_fact() -> None:
    members = (
        Member("n0", role="primary", wal_position=100 << 20),
        Member("n1", wal_position=10 << 20),
        Member("n2", wal_position=100 << 20, tags=Tags(failover_priority=0)),
    )
    view = ClusterView(leader=LeaderKey("n0"), members=members, leader_wal_position=100 << 20)
    problem = switchover_problem(view, TIMING, "n0", None, 1.0)
    assert problem is not None and "n1: lag 94371840 B > maximum_lag_on_failover" in problem
    assert "n2: tags forbid promotion" in problem
    fit = ClusterView(leader=LeaderKey("n0"), members=(*members, Member("n3", wal_position=100 << 20)))
    assert switchover_problem(fit, TIMING, "n0", None, 1.0) is None
    leaderless = dataclasses.replace(fit, leader=None)  # a failover needs no leader, only a fit candidate
    assert switchover_problem(leaderless, TIMING, None, "n3", 1.0) is None
    unfit = switchover_problem(leaderless, TIMING, None, "n2", 1.0)
    assert unfit == "candidate n2 is not eligible: tags forbid promotion"
    assert "leader name does not match" in str(switchover_problem(leaderless, TIMING, "n0", "n3", 1.0))


def test_patch_config_merges_checks_and_compares_versions(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    assert get(n0, "/config").json == {}
    params = {"postgresql": {"parameters": {"work_mem": "8MB", "max_connections": 120}}}
    first = admin(n0, "PATCH", "/config", {"maximum_lag_on_failover": 2 << 20, **params})
    assert first.status == 200 and first.json == {"maximum_lag_on_failover": 2 << 20, **params}
    assert get(n1, "/config").json == first.json  # it is the DCS key, not a node's copy
    second = admin(n1, "PATCH", "/config", {"postgresql": {"parameters": {"work_mem": None, "max_connections": 150}}})
    assert second.json == {"maximum_lag_on_failover": 2 << 20, "postgresql": {"parameters": {"max_connections": 150}}}

    unsafe = admin(n0, "PATCH", "/config", {"ttl": 5})
    assert unsafe.status == 412 and "loop_wait" in unsafe.message and "ttl (5 s)" in unsafe.message
    for patch, key in (
        ({"ttl": "30"}, "ttl: expected a number"),
        ({"pause": 1}, "pause: expected true or false"),
        ({"maximum_lag_on_failover": 1.5}, "maximum_lag_on_failover: expected a whole number"),
        ({"regent_test": {"a": 1}}, "regent_test: unknown setting"),
        ({"loop_wiat": 5}, "loop_wiat: unknown setting (did you mean 'loop_wait'?)"),
        ({"postgresql": {"parameters": {"max_connections": "abc"}}}, "postgresql.parameters.max_connections: expec"),
    ):
        wrong = admin(n0, "PATCH", "/config", patch)
        assert wrong.status == 400 and wrong.message.startswith(key), wrong.raw
    assert admin(n0, "PATCH", "/config", b"{oops").status == 400

    stale = n0.api.dcs.read_cluster()
    assert admin(n0, "PATCH", "/config", {"primary_start_timeout": 20}).status == 200
    read_cluster = n0.api.dcs.read_cluster
    n0.api.dcs.read_cluster = lambda: stale  # type: ignore[method-assign] # as if another writer slipped in
    try:
        conflict = admin(n0, "PATCH", "/config", {"primary_start_timeout": 25})
    finally:
        n0.api.dcs.read_cluster = read_cluster  # type: ignore[method-assign]
    assert conflict.status == 409 and "changed" in conflict.message
    # If-Match: the write applies to the version the client read (GET /config's ETag), as `edit-config` needs
    etag = get(n1, "/config").headers["ETag"]
    assert etag.startswith('"') and etag != '"none"'
    assert admin(n0, "PATCH", "/config", {"primary_start_timeout": 20}, {"If-Match": etag}).status == 200
    late = admin(n0, "PATCH", "/config", {"primary_start_timeout": 30}, {"If-Match": etag})
    assert late.status == 412 and f"not {etag}: read it again" in late.message
    assert admin(n0, "PUT", "/config", {"ttl": 30}, {"If-Match": etag}).status == 412

    assert admin(n1, "PATCH", "/config", {"pause": True}).json["pause"] is True
    paused = admin(n0, "POST", "/switchover", {"leader": "n0", "candidate": "n1"})
    assert paused.status == 412 and "paused" in paused.message
    for name in ("n0", "n1"):  # what `patronictl pause --wait` waits for
        wait_until(lambda name=name: member_key(cluster, name).get("pause") is True, 10, f"{name} publishing pause")
    assert get(n0, "/config").json["primary_start_timeout"] == 20
    replaced = admin(n0, "PUT", "/config", {"ttl": 30, "pause": True})
    assert replaced.status == 200 and get(n1, "/config").json == {"ttl": 30, "pause": True}
    assert admin(n0, "PUT", "/config", {"ttl": -1}).status == 400
    cleared = admin(n0, "PATCH", "/config", {"ttl": None, "pause": None})
    assert cleared.status == 200 and cleared.json == {}
    wait_until(lambda: "pause" not in member_key(cluster, "n1"), 10, "n1 no longer publishing pause")


def test_merge_patch_follows_rfc_7386() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


def test_unknown_paths_and_wrong_methods(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    assert get(n0, "/nope").status == 404 and "/nope" in get(n0, "/nope").message
    wrong = admin(n0, "POST", "/primary")
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD, OPTIONS"
    delete = admin(n0, "DELETE", "/config")
    assert delete.status == 405 and "PATCH, PUT" in delete.headers["Allow"]
    assert get(n0, "/switchover").status == 405
    assert get(n0, "/switchover", "OPTIONS").status == 200
    unknown_method = get(n0, "/primary", "BREW")
    assert unknown_method.status == 501 and "message" in unknown_method.json
    with socket.create_connection(("127.0.0.1", n0.api.port), timeout=5) as raw:
        raw.sendall(b"GET /primary junk HTTP/1.0\r\n\r\n")  # four words: a malformed request line
        answer = raw.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") and "message" in json.loads(body)


def test_a_bug_becomes_a_500_without_a_traceback(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> NodeView:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(cluster["n0"].api, "node", broken)
    answer = get(cluster["n0"], "/primary")
    assert answer.status == 500 and answer.json["message"].startswith("internal error")
    assert b"secret" not in answer.raw and b"Traceback" not in answer.raw


def test_bodies_too_deep_too_slow_or_too_big_get_their_4xx_without_a_traceback(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("DEBUG")
    port = cluster["n0"].api.port
    deep = call(port, "PATCH", "/config", b"[" * 100_000, auth=AUTH)
    assert (deep.status, deep.message) == (400, "malformed JSON: nested deeper than 32 levels")
    inner: Any = 1
    for _ in range(31):  # 31 lists inside the 3 objects: 34 levels
        inner = [inner]
    nested = call(port, "PATCH", "/config", {"postgresql": {"parameters": {"a": inner}}}, auth=AUTH)
    assert (nested.status, nested.message) == (400, "malformed JSON: nested deeper than 32 levels")

    monkeypatch.setattr(http_plumbing, "BODY_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"PATCH /config HTTP/1.1\r\nHost: x\r\nAuthorization: " + basic(*AUTH).encode())
        raw.sendall(b'\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"ttl":')  # then stalls
        started = time.monotonic()
        answer = b"".join(iter(lambda: raw.recv(4096), b"")).decode()  # until the server closes
        waited = time.monotonic() - started
    assert answer.startswith("HTTP/1.0 408") and "the body did not arrive within 0.5 s" in answer, answer
    assert waited < 5

    big = call(port, "PATCH", "/config", b" " * (10 << 20), auth=AUTH)  # 10 MB: read and dropped, then answered
    assert big.status == 413 and big.message == f"the body ({10 << 20} bytes) exceeds {1 << 20} bytes"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert get(cluster["n0"], "/primary").status == 200  # still serving


def test_a_connection_reset_is_not_logged_as_an_error(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level("DEBUG", logger="regent.api")
    with socket.create_connection(("127.0.0.1", cluster["n0"].api.port), timeout=5) as raw:
        raw.sendall(b"GET /primary HTTP/1.1\r\n")  # HAProxy's check, cut short by a reset
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: "ended with an error" in caplog.text, 5, "the reset seen by the server")
    assert "Traceback" not in capsys.readouterr().err
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "WARNING")]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, its own CA: it serves, and signs a client in, alike."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_tls_from_certfile_and_keyfile(cluster: Cluster, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    n0 = cluster["n0"]
    settings = RestApiSettings("127.0.0.1", 0, "127.0.0.1:0", AUTH, cert, key)
    api = ApiServer(n0.agent, dataclasses.replace(n0.config, restapi=settings))
    api.start()
    try:
        assert api.port != 0
        trusted = ssl.create_default_context(cafile=str(cert))
        answer = call(api.port, "GET", "/primary", tls=trusted)
        assert answer.status == 200 and answer.json["role"] == "primary"
        assert call(api.port, "POST", "/reload", tls=trusted).status == 401
        with pytest.raises(ssl.SSLError):
            call(api.port, "GET", "/health", tls=ssl.create_default_context())  # an untrusted certificate
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            call(api.port, "GET", "/health")  # plain HTTP on the TLS port
        assert call(api.port, "GET", "/health", tls=trusted).status == 200  # still serving after both
    finally:
        api.stop()


def test_regentctl_calls_with_the_ctl_sections_tls_and_client_certificate(cluster: Cluster, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    n0 = cluster["n0"]
    settings = RestApiSettings("127.0.0.1", 0, "127.0.0.1:0", AUTH, cert, key, cafile=cert, verify_client="required")
    api = ApiServer(n0.agent, dataclasses.replace(n0.config, restapi=settings))
    api.start()
    url = f"https://127.0.0.1:{api.port}/patroni"
    try:
        signed_in = CtlSettings(AUTH, cacert=cert, certfile=cert, keyfile=key)
        assert ctl_call("n0", url, "POST", "/reload", signed_in) == (200, {"message": "reloaded"})
        assert ctl_call("n0", url, "GET", "/health", CtlSettings(insecure=True, certfile=cert, keyfile=key))[0] == 200
        with pytest.raises(CtlError, match="certificate verify failed"):
            ctl_call("n0", url, "GET", "/health", CtlSettings(certfile=cert, keyfile=key))  # the server untrusted
        with pytest.raises(CtlError, match=r"member n0's REST API at 127\.0\.0\.1:\d+ did not answer"):
            ctl_call("n0", url, "GET", "/health", CtlSettings(cacert=cert))  # no client certificate: refused
        wrong = ctl_call(
            "n0", url, "POST", "/reload", CtlSettings(("admin", "nope"), cacert=cert, certfile=cert, keyfile=key)
        )
        assert wrong[0] == 401
    finally:
        api.stop()


# --- failsafe mode: POST /failsafe, as a leader the DCS does not answer asks its members ---------------------------


def sample(node: Node, metric: str) -> float:
    """One of the node's /metrics samples, by name (its labels are the scope and the member's name)."""
    labels = f'{{scope="{SCOPE}",name="{node.name}"}}'
    lines = get(node, "/metrics").raw.decode().splitlines()
    return float(next(line.rsplit(" ", 1)[1] for line in lines if line.startswith(metric + labels)))


def ping_from(node: Node) -> dict[str, str]:
    """What a leader's ConfirmFailsafe posts: its name, conn_url and api_url."""
    executor = node.agent.executor
    return {"name": node.name, "conn_url": executor.conn_url, "api_url": executor.api_url}


def set_failsafe_mode(cluster: Cluster, on: bool) -> None:
    """The DCS config key's failsafe_mode (PATCH /config), once both agents' turns run with it."""
    assert admin(cluster["n0"], "PATCH", "/config", {"failsafe_mode": True if on else None}).status == 200
    for node in cluster.nodes.values():
        wait_until(lambda node=node: sample(node, "patroni_failsafe_mode_enabled") == on, 10, f"{node.name}: {on}")


def test_post_failsafe_needs_auth_and_a_name_and_failsafe_mode(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    ping = ping_from(cluster["n0"])
    assert call(n1.api.port, "POST", "/failsafe", ping).status == 401
    assert call(n1.api.port, "POST", "/failsafe", ping, auth=("admin", "wrong")).status == 401
    for body, said in (
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"", "expected a JSON object"),
        ({"conn_url": "postgres://x"}, "naming the leader in `name`"),
        ({"name": 7}, "naming the leader in `name`"),
        ({"name": ""}, "naming the leader in `name`"),
    ):
        answer = admin(n1, "POST", "/failsafe", body)
        assert answer.status == 400 and said in answer.message, (body, answer.raw)
    off = admin(n1, "POST", "/failsafe", ping)  # Patroni's 502: this cluster runs without failsafe mode
    assert (off.status, off.raw) == (502, b"failsafe_mode is not enabled")
    assert off.headers["Content-Type"] == http_plumbing.TEXT
    assert sample(n1, "patroni_failsafe_mode_enabled") == 0 and sample(n1, "patroni_failsafe_mode_is_active") == 0


def test_with_failsafe_mode_a_replica_accepts_the_leaders_ping_and_the_leader_refuses(
    cluster: Cluster, tmp_path: Path
) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    set_failsafe_mode(cluster, True)
    try:
        # the leader keeps the failsafe key: every member with a REST API, as each node last read it
        urls = {name: node.agent.executor.api_url for name, node in cluster.nodes.items()}
        wait_until(lambda: get(n1, "/failsafe").status == 200 and get(n1, "/failsafe").json == urls, 10, "the key")
        assert sample(n0, "patroni_failsafe_member") == sample(n1, "patroni_failsafe_member") == 1
        started = time.monotonic()
        accepted = admin(n1, "POST", "/failsafe", ping_from(n0))
        answered_s = time.monotonic() - started
        assert (accepted.status, accepted.raw) == (200, b"Accepted")
        assert accepted.headers["Content-Type"] == http_plumbing.TEXT

        def heard() -> str:  # the ping reaches the next turn's readings: for ttl, n1 would not race for the key
            return str(get(n1, "/decision").json["facts"]["failsafe_leader_alive"])

        wait_until(lambda: heard().startswith("yes (n0 pinged "), 10, "n1's next turn seeing n0's ping")
        assert get(n1, "/patroni").json["failsafe_mode_is_active"] is True  # as that turn saw it: heard within ttl
        assert get(n1, "/health").json["failsafe_mode_is_active"] is True
        assert sample(n1, "patroni_failsafe_mode_is_active") == 1
        leader = admin(n0, "POST", "/failsafe", ping_from(n1))  # a writable leader must not let another lead
        assert (leader.status, leader.raw) == (500, b"Running as a leader")
        assert "failsafe_mode_is_active" not in get(n0, "/patroni").json  # its lease is the key's, not the members'
        assert sample(n0, "patroni_failsafe_mode_is_active") == 0
        assert get(n0, "/decision").json["facts"]["failsafe_leader_alive"] == "no (no ping)"  # a refusal: not kept
        itself = admin(n1, "POST", "/failsafe", ping_from(n1))
        assert (itself.status, itself.raw) == (500, b"n1 is this node")
        # the leader's own client: its restapi login, all at once, one line per member that did not accept
        me, member = ping_from(n0), (("n1", urls["n1"]),)
        assert PeerClient(AUTH).confirm_failsafe(member, me, 2.0) == {}
        assert PeerClient(("admin", "wrong")).confirm_failsafe(member, me, 2.0)["n1"].startswith("401 ")
        assert PeerClient(AUTH).confirm_failsafe((("n0", urls["n0"]),), ping_from(n1), 2.0) == {
            "n0": "500 Running as a leader"
        }
        _confirm_over_tls_with_a_client_certificate(cluster, tmp_path)
        print(f"\n[timing] POST /failsafe on a replica answered Accepted in {answered_s * 1000:.1f} ms")
    finally:
        set_failsafe_mode(cluster, False)
    assert get(n1, "/failsafe").status == 200  # the key stays (as Patroni's): it is only used in failsafe mode


def _confirm_over_tls_with_a_client_certificate(cluster: Cluster, tmp_path: Path) -> None:
    """A member whose REST API serves https and requires a client certificate: the leader's client verifies it
    against restapi.cafile and signs in with its own restapi certificate (`runtime.peers.peer_tls`)."""
    cert, key = self_signed(tmp_path)
    n1 = cluster["n1"]
    settings = RestApiSettings("127.0.0.1", 0, "127.0.0.1:0", AUTH, cert, key, cafile=cert, verify_client="required")
    api = ApiServer(n1.agent, dataclasses.replace(n1.config, restapi=settings))
    api.start()
    try:
        member, me = (("n1", f"https://127.0.0.1:{api.port}/patroni"),), ping_from(cluster["n0"])
        assert PeerClient(AUTH, peer_tls(settings, CtlSettings())).confirm_failsafe(member, me, 2.0) == {}
        anonymous = PeerClient(AUTH, peer_tls(dataclasses.replace(settings, verify_client="none"), CtlSettings()))
        assert anonymous.confirm_failsafe(member, me, 2.0)["n1"].startswith("no answer: ")  # no certificate
        untrusting = PeerClient(AUTH).confirm_failsafe(member, me, 2.0)["n1"]  # the system's CAs do not know it
        assert "certificate verify failed" in untrusting
    finally:
        api.stop()


def test_a_member_that_does_not_answer_counts_as_refusing_within_the_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel's backlog), never answers
    try:
        members = (
            ("n1", f"http://127.0.0.1:{silent.getsockname()[1]}/patroni"),
            ("n2", f"http://127.0.0.1:{free_port()}/patroni"),
        )
        started = time.monotonic()
        refused = PeerClient(AUTH).confirm_failsafe(members, {"name": "n0"}, 0.5)
        took_s = time.monotonic() - started
    finally:
        silent.close()
    assert refused["n1"] in ("did not answer within 0.5 s", "no answer: timed out")
    assert refused["n2"].startswith("no answer: ") and "refused" in refused["n2"]
    assert took_s < 0.9, took_s  # asked at once: one timeout, not one per member
    print(f"\n[timing] ConfirmFailsafe with a silent and a closed member: refused in {took_s:.3f} s (timeout 0.5 s)")


# --- operations that change the cluster (last: they move roles) ---------------------------------------------------


def test_restart_requests_the_node_cannot_honour_are_refused_by_a_row(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    wrong_role = admin(n0, "POST", "/restart", {"role": "replica"})
    assert wrong_role.status == 412 and "restart is for a replica, this node is a primary" in wrong_role.message
    nothing_pending = admin(n1, "POST", "/restart", {"restart_pending": True})
    assert nothing_pending.status == 412 and "no setting waits for a restart" in nothing_pending.message
    rules = [turn["rule"] for turn in get(n0, "/decision").json["decisions"]]
    assert "lead_refuse_request" in rules


def postmaster_started(node: Node) -> datetime:
    return query(node.config.postgresql, "SELECT pg_postmaster_start_time()")[0][0]


def restarted_since(node: Node, started: datetime) -> bool:
    try:
        return is_replica(node) and postmaster_started(node) > started
    except psycopg2.OperationalError:  # shutting down or starting: not yet
        return False


def last_turn(node: Node, rule: str) -> dict[str, Any] | None:
    """The newest turn of `rule` in /decision (a turn shows there once its actions have ended)."""
    return next((turn for turn in get(node, "/decision").json["decisions"] if turn["rule"] == rule), None)


def test_a_scheduled_restart_runs_at_its_time_not_before_and_a_deleted_one_never(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    started = postmaster_started(n1)
    at = in_seconds(4)
    scheduled = admin(n1, "POST", "/restart", {"schedule": at, "role": "replica"})
    assert (scheduled.status, scheduled.message) == (202, "Restart scheduled"), scheduled.raw
    shown = get(n1, "/patroni").json["scheduled_restart"]
    assert shown == {"schedule": datetime.fromisoformat(at).isoformat(), "role": "replica"}
    again = admin(n1, "POST", "/restart", {"schedule": in_seconds(30)})
    assert (again.status, again.message) == (409, "Another restart is already scheduled")
    wait_until(lambda: datetime.now(UTC) >= datetime.fromisoformat(at) - timedelta(seconds=1), 10, "1 s before")
    assert postmaster_started(n1) == started and "scheduled_restart" in get(n1, "/patroni").json  # not before
    wait_until(lambda: restarted_since(n1, started), 20, "n1 restarted")
    assert postmaster_started(n1) >= datetime.fromisoformat(at)  # at its time: the new postmaster started after it
    assert "scheduled_restart" not in get(n1, "/patroni").json
    wait_until(lambda: last_turn(n1, "follow_restart_request") is not None, 10, "the restart's turn recorded")
    turn = last_turn(n1, "follow_restart_request")
    assert turn is not None
    assert "scheduled_restart_due=yes" in turn["why"] and "RestartStandby" in turn["succeeded"]

    started = postmaster_started(n1)
    at = in_seconds(3)
    assert admin(n1, "POST", "/restart", {"schedule": at}).status == 202
    deleted = admin(n1, "DELETE", "/restart")
    assert (deleted.status, deleted.message) == (200, "scheduled restart deleted")
    assert admin(n1, "DELETE", "/restart").status == 404
    wait_until(lambda: datetime.now(UTC) >= datetime.fromisoformat(at) + timedelta(seconds=3), 10, "3 s after it")
    assert postmaster_started(n1) == started and "scheduled_restart" not in get(n1, "/patroni").json


def test_a_scheduled_switchover_is_shown_and_can_be_deleted(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    at = in_seconds(600)
    answer = admin(n1, "POST", "/switchover", {"leader": "n0", "candidate": "n1", "scheduled_at": at})
    assert (answer.status, answer.message) == (202, "Switchover scheduled"), answer.raw
    expected = {"at": datetime.fromisoformat(at).isoformat(), "from": "n0", "to": "n1"}
    assert get(n0, "/cluster").json["scheduled_switchover"] == expected
    wait_until(lambda: n0.agent.turns[-1].decision.rule == "lead_await_switchover", 10, "n0 awaiting it")
    assert "due at" in n0.agent.turns[-1].decision.why and is_primary(n0)
    deleted = admin(n0, "DELETE", "/switchover")
    assert (deleted.status, deleted.message) == (200, "scheduled switchover deleted")
    assert "scheduled_switchover" not in get(n0, "/cluster").json
    assert admin(n0, "DELETE", "/switchover").status == 404
    wait_until(lambda: n0.agent.turns[-1].decision.rule == "lead_steady", 10, "n0 steady again")


def test_restart_the_leader_renews_its_lease_first_and_stays_leader(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    settings = n0.config.postgresql
    before = query(settings, "SELECT pg_postmaster_start_time()")[0][0]
    restarted = admin(n0, "POST", "/restart", {"role": "primary", "timeout": "30s"})
    assert restarted.status == 200 and "[lead_restart_request]" in restarted.message, restarted.raw
    assert query(settings, "SELECT pg_postmaster_start_time(), pg_is_in_recovery()")[0] > (before, False)
    turn = next(t for t in reversed(n0.agent.turns) if t.decision.rule == "lead_restart_request")
    names = [type(action).__name__ for action in turn.decision.actions]
    assert names.index("RenewLeaderKey") < names.index("RestartPrimary") and "RestartPrimary" in turn.succeeded
    wait_until(lambda: is_primary(n0), 10, "n0 primary again")


def test_restart_and_reload_a_replica(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    settings = n1.config.postgresql
    before = query(settings, "SELECT pg_postmaster_start_time()")[0][0]
    restarted = admin(n1, "POST", "/restart", {})
    assert restarted.status == 200 and "restarted" in restarted.message
    assert query(settings, "SELECT pg_postmaster_start_time()")[0][0] > before
    wait_until(lambda: is_replica(n1), 20, "n1 a replica again after its restart")
    reloaded = admin(n1, "POST", "/reload")
    assert reloaded.status == 200 and "reloaded" in reloaded.message


def test_reinitialize_only_a_replica(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    refused = admin(n0, "POST", "/reinitialize")
    assert refused.status == 503 and "leader" in refused.message
    data_dir = n1.config.postgresql.data_dir
    before = {path.name for path in data_dir.parent.iterdir()}
    # nobody is tagged clonefrom: from the leader
    done = admin(n1, "POST", "/reinitialize", {"force": True, "from_leader": False})
    assert done.status == 200 and done.message == "reinitialized from n0"
    moved = {path.name for path in data_dir.parent.iterdir()} - before
    assert any(name.startswith(data_dir.name) for name in moved)  # the old data directory moved aside, kept
    wait_until(lambda: is_replica(n1) and streams_to(n0, "n1"), 30, "n1 streaming again after reinitialize")


def test_switchover_to_the_replica(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    wait_until(lambda: n1.agent.snapshot is not None and n1.agent.config().pause is False, 5, "a current snapshot")

    def n1_caught_up_in_the_dcs() -> bool:  # a test before may have re-cloned n1: its member key lags a loop
        members = get(n0, "/cluster").json["members"]
        return any(m["name"] == "n1" and m.get("lag") == 0 for m in members)

    wait_until(n1_caught_up_in_the_dcs, 20, "n1's published position caught up")
    answer = admin(n0, "POST", "/switchover", {"leader": "n0", "candidate": "n1"})
    assert answer.status == 200, answer.raw
    assert answer.message == "Successfully switched over to n1"
    wait_until(lambda: is_primary(n1), 20, "n1 primary")
    wait_until(lambda: is_replica(n0), 30, "n0 a replica of n1")
    assert get(n0, "/primary").status == 503 and get(n1, "/replica").status == 503
    history = get(n0, "/history").json
    assert [line[0] for line in history] == [1] and history[0][1] > 0
    assert history[0][4] == "n1"  # who began timeline 2, and when (Patroni's timestamp, ISO 8601)
    assert abs(datetime.fromisoformat(history[0][3]) - datetime.now(UTC)) < timedelta(minutes=1)
    turns = get(n1, "/decision").json["decisions"]
    assert any(turn["rule"] == "cand_won" for turn in turns)


def test_a_scheduled_switchover_happens_at_its_time(cluster: Cluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]  # n1 leads since the switchover before
    wait_until(lambda: is_primary(n1) and is_replica(n0) and streams_to(n1, "n0"), 30, "n0 streaming from n1")

    def n0_caught_up_in_the_dcs() -> bool:
        return any(m["name"] == "n0" and m.get("lag") == 0 for m in get(n1, "/cluster").json["members"])

    wait_until(n0_caught_up_in_the_dcs, 20, "n0's published position caught up")
    at = in_seconds(4)
    answer = admin(n0, "POST", "/switchover", {"leader": "n1", "candidate": "n0", "scheduled_at": at})
    assert answer.status == 202, answer.raw
    wait_until(lambda: datetime.now(UTC) >= datetime.fromisoformat(at) - timedelta(seconds=1), 10, "1 s before")
    assert is_primary(n1) and not is_primary(n0)  # not before its time
    assert last_turn(n1, "lead_await_switchover") is not None
    wait_until(lambda: is_primary(n0), 20, "n0 primary")
    switched = last_turn(n1, "lead_switchover")
    assert switched is not None and datetime.fromisoformat(switched["at"]) >= datetime.fromisoformat(at)
    wait_until(lambda: is_replica(n1), 30, "n1 a replica of n0")
    assert "scheduled_switchover" not in get(n0, "/cluster").json
    # each history line names its own new leader: n1 began timeline 2, n0 timeline 3
    wait_until(lambda: len(get(n0, "/history").json) == 2, 10, "timeline 2's line in the history key")
    assert [(line[0], line[4]) for line in get(n0, "/history").json] == [(1, "n1"), (2, "n0")]


def test_a_port_in_use_names_the_setting_and_the_address(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    taken = RestApiSettings("127.0.0.1", n0.api.port, f"127.0.0.1:{n0.api.port}", AUTH)
    with pytest.raises(OSError, match=rf"restapi.listen: cannot listen on 127.0.0.1:{n0.api.port}: Address already in"):
        ApiServer(n0.agent, dataclasses.replace(n0.config, restapi=taken)).start()


def test_the_allowlist_keeps_unsafe_methods_to_its_networks(cluster: Cluster) -> None:
    n0 = cluster["n0"]
    elsewhere = dataclasses.replace(n0.config.restapi, listen_port=0, allowlist=("10.0.0.0/8",))
    api = ApiServer(n0.agent, dataclasses.replace(n0.config, restapi=elsewhere))
    api.start()
    try:
        refused = call(api.port, "POST", "/reload", auth=AUTH)
        assert refused.status == 403 and "not in restapi.allowlist" in refused.message
        assert call(api.port, "GET", "/health").status == 200  # reads stay open
    finally:
        api.stop()


def test_verify_client_required_asks_for_a_certificate_from_cafile(cluster: Cluster, tmp_path: Path) -> None:
    def certificate(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-days", "1",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return cert, key

    (server_cert, server_key), (client_cert, client_key) = certificate("server"), certificate("client")
    n0 = cluster["n0"]
    settings = RestApiSettings(
        "127.0.0.1", 0, "127.0.0.1:0", AUTH, server_cert, server_key, client_cert, "required"
    )  # the client's self-signed certificate is its own CA
    api = ApiServer(n0.agent, dataclasses.replace(n0.config, restapi=settings))
    api.start()
    try:
        anonymous = ssl.create_default_context(cafile=str(server_cert))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            call(api.port, "GET", "/health", tls=anonymous)
        known = ssl.create_default_context(cafile=str(server_cert))
        known.load_cert_chain(str(client_cert), str(client_key))
        assert call(api.port, "GET", "/health", tls=known).status == 200
    finally:
        api.stop()
