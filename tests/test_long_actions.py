"""Long actions keep the node alive, against real etcd and PostgreSQL 15 (two agents wired by `runtime.cli.build`,
loop_wait 1 s, ttl 10 s): while a clone or a restart runs for longer than ttl, the node core's keepalive renews the
leader key and republishes the member key every loop_wait, so neither lapses and nobody else takes over."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.postgres.settings import ReplicaMethod
from fsm import State
from runtime.config import RegentConfig
from tests.servers.common import wait_until
from tests.servers.etcd import EtcdServer
from tests.servers.postgres import PgNodes, cloning_script
from tests.test_api import SCOPE, TIMING, Cluster, admin, is_primary, is_replica, step_until, streams_to

SLOW_S = 1.5 * TIMING.ttl_s  # past ttl: without the keepalive the keys lapse meanwhile


class SlowCloneCluster(Cluster):
    """n1 clones with a script that sleeps SLOW_S first."""

    def config(self, name: str) -> RegentConfig:
        config = super().config(name)
        if name != "n1":
            return config
        script = self.pg.base / "slow-clone.sh"
        script.write_text(cloning_script(sleep_s=SLOW_S))
        script.chmod(0o755)
        methods = (ReplicaMethod("slow_restore", command=(str(script),)), ReplicaMethod("basebackup"))
        return dataclasses.replace(
            config, postgresql=dataclasses.replace(config.postgresql, create_replica_methods=methods)
        )


def etcd_key(etcd: EtcdServer, key: str) -> str | None:
    """The value of `key` under the cluster's prefix (etcd v2 API), or None when it is not there."""
    try:
        with urllib.request.urlopen(f"{etcd.url}/v2/keys/service/{SCOPE}/{key}", timeout=2) as answer:
            return str(json.load(answer)["node"]["value"])
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def watch_key(etcd: EtcdServer, key: str, until: threading.Event) -> list[float]:
    """Poll `key` every 0.2 s until `until` is set; the times at which it was missing."""
    missing: list[float] = []
    while not until.wait(0.2):
        if etcd_key(etcd, key) is None:
            missing.append(time.monotonic())
    return missing


def checkpointer_pid(data_dir: Path) -> int:
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster and "checkpointer" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no checkpointer under postmaster {postmaster}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlowCloneCluster]:
    with EtcdServer("long") as etcd, PgNodes(SCOPE) as pg:
        made = SlowCloneCluster(etcd, pg)
        try:
            n0 = made.add("n0")
            step_until(n0.agent, lambda: n0.agent.state is State.LEADER and bool(n0.agent.postgres.writable))
            n0.api.start()
            n0.run_loop()
            yield made
        finally:
            made.close()


def test_a_clone_longer_than_ttl_keeps_the_member_key(cluster: SlowCloneCluster) -> None:
    n0 = cluster["n0"]
    n1 = cluster.add("n1")
    n1.api.start()
    started = time.monotonic()
    n1.run_loop()
    wait_until(lambda: etcd_key(cluster.etcd, "members/n1") is not None, 10, "n1's first member key")
    done = threading.Event()
    missing: list[float] = []
    watcher = threading.Thread(target=lambda: missing.extend(watch_key(cluster.etcd, "members/n1", done)))
    watcher.start()
    try:
        wait_until(lambda: is_replica(n1) and streams_to(n0, "n1"), SLOW_S + 40, "n1 streaming after its slow clone")
    finally:
        done.set()
        watcher.join()
    took = time.monotonic() - started
    assert took > SLOW_S > TIMING.ttl_s, f"the clone took {took:.1f} s: it did not outlast ttl"
    assert missing == [], f"n1's member key lapsed {len(missing)} times during a {took:.1f} s clone"


def test_a_leader_restart_longer_than_ttl_keeps_the_leader_key(cluster: SlowCloneCluster) -> None:
    n0, n1 = cluster["n0"], cluster["n1"]
    wait_until(lambda: is_replica(n1) and streams_to(n0, "n1"), 60, "n1 streaming from n0")
    held = checkpointer_pid(n0.config.postgresql.data_dir)
    os.kill(held, signal.SIGSTOP)  # the fast shutdown waits for its checkpoint: the restart outlasts ttl
    answers: list[int] = []
    restart = threading.Thread(target=lambda: answers.append(admin(n0, "POST", "/restart").status))
    try:
        restart.start()
        wait_until(lambda: not is_primary(n0), 10, "n0's Postgres shutting down for the restart")
        deadline = time.monotonic() + SLOW_S
        while time.monotonic() < deadline:
            assert etcd_key(cluster.etcd, "leader") == "n0", "the leader key lapsed while n0 restarted"
            assert n1.agent.state is not State.LEADER, "n1 took over while n0 restarted"
            time.sleep(0.2)
    finally:
        os.kill(held, signal.SIGCONT)
    restart.join(60)
    wait_until(lambda: is_primary(n0), 30, "n0 primary again after its restart")
    assert etcd_key(cluster.etcd, "leader") == "n0" and n1.agent.state is State.FOLLOWER
    assert answers == [200], answers
