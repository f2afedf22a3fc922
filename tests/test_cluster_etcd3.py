"""A three-node cluster on Debian's etcd 3.4 started with its default flags (no v2 API) through the `etcd3:` section:
it bootstraps, keeps Patroni's v3 key layout with the leader key on a lease, answers regentctl through etcd3://,
fails over when the leader's machine dies, and goes read-only then leads again through an etcd outage."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.servers.cluster import HOST, REPO, TIMINGS, Cluster
from tests.test_dcs_contract import v3_call

TTL, LOOP_WAIT = TIMINGS["ttl"], TIMINGS["loop_wait"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(3, scope="regent-v3", etcd_api=3) as made:
        made.start(timeout_s=90.0)
        yield made


def v3_key(cluster: Cluster, key: str) -> dict[str, str] | None:
    """A key as any v3 client reads it (the gateway's range), its value decoded; None when it is absent."""
    kvs = v3_call(cluster.etcd.url, "/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs", [])
    if not kvs:
        return None
    return {**kvs[0], "value": base64.b64decode(kvs[0].get("value", "")).decode()}


def test_etcd_serves_no_v2_api_and_the_cluster_runs_on_v3_keys(cluster: Cluster) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.etcd.url}/v2/keys/service", timeout=5)
    assert refused.value.code == 404, "etcd started with its defaults serves no v2 API"
    primary = cluster.wait_healthy()
    leader = v3_key(cluster, f"/service/{cluster.scope}/leader")
    assert leader is not None and leader["value"] == cluster.nodes[primary].name
    assert int(leader.get("lease", 0)) != 0, "the leader key lives on a lease of ttl seconds"
    for node in cluster.nodes:
        member = v3_key(cluster, f"/service/{cluster.scope}/members/{node.name}")
        assert member is not None and json.loads(member["value"])["api_url"].endswith(f":{node.api_port}/patroni")
    config = v3_key(cluster, f"/service/{cluster.scope}/config")
    assert config is not None and json.loads(config["value"])["ttl"] == TTL


def test_regentctl_reads_the_cluster_through_etcd3(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    listed = subprocess.run(
        [sys.executable, "-m", "runtime.ctl", "--dcs-url", f"etcd3://{HOST}:{cluster.etcd.port}",
         "--scope", cluster.scope, "list", "-f", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    roles = {row["Member"]: row["Role"] for row in json.loads(listed.stdout)}
    assert roles == {node.name: "Leader" if node.index == primary else "Replica" for node in cluster.nodes}


def test_the_leader_machine_killed_fails_over_on_etcd3(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    cluster.write(primary, "before the crash")
    cluster.wait_replicated("before the crash", cluster.others(primary))
    started = time.monotonic()
    cluster.kill_host(primary)
    new, written = cluster.wait_writable(cluster.others(primary), TTL + LOOP_WAIT + 10, value="after failover")
    print(f"\n[timing] etcd3: leader machine killed -> write on {cluster.nodes[new].name} {written - started:.3f} s")
    assert written - started <= TTL + LOOP_WAIT + 5
    assert cluster.has_value(new, "before the crash")
    cluster.start_agent(primary)
    assert cluster.wait_healthy(60) == new


def test_an_etcd3_outage_makes_the_leader_read_only_then_it_leads_again(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    with cluster.writer(primary) as writes:
        time.sleep(0.3)
        stopped = time.monotonic()
        cluster.stop_etcd()
        cluster.wait_for(lambda: not cluster.writable(primary), TTL + 5, "the leader read-only", interval_s=0.05)
        read_only = time.monotonic() - stopped
    print(f"\n[timing] etcd3 stopped -> leader read-only after {read_only:.3f} s (bound ttl = {TTL:g} s)")
    assert read_only <= TTL and max(writes) - stopped <= TTL
    restarted = time.monotonic()
    cluster.start_etcd()
    leader = cluster.wait_healthy(60)
    _, written = cluster.wait_writable([leader], 10, value="after the outage")
    print(f"[timing] etcd3 back -> {cluster.nodes[leader].name} writable {written - restarted:.3f} s later")
    cluster.wait_replicated("after the outage", cluster.others(leader))
