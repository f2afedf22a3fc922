"""Patroni's `replicatefrom` and `nostream` tags on a real cluster: n2 streams from the replica n1 (which keeps its
slot), n3 replays the WAL archive only; the leader keeps slots for its own standbys alone. When n1 goes, n2 streams
from the leader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from adapters.postgres.runas import OsUser
from tests.servers.cluster import REPO, Cluster, Node

TAGS = {"n2": {"replicatefrom": "n1"}, "n3": {"nostream": True}}


class CascadeCluster(Cluster):
    """n0..n3 archiving to one directory; n2 and n3 carry the tags above."""

    def config(self, node: Node) -> dict[str, Any]:
        raw = super().config(node)
        archive = self.base / "archive"
        if not archive.exists():
            user = OsUser.resolve("postgres")
            archive.mkdir(mode=0o700)
            os.chown(archive, user.uid, user.gid)
        pg = raw["postgresql"]
        pg["parameters"] |= {"archive_mode": "on", "archive_command": f"cp %p {archive}/%f"}
        pg["recovery_conf"] = {"restore_command": f"cp {archive}/%f %p"}
        raw["tags"] = TAGS.get(node.name, {})
        return raw


def sender_port(cluster: Cluster, n: int) -> int | None:
    rows = cluster.sql(n, "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
    return rows[0][0] if rows else None


def slots(cluster: Cluster, n: int) -> set[str]:
    return {row[0] for row in cluster.sql(n, "SELECT slot_name FROM pg_replication_slots")}


def test_cascading_and_archive_only_replicas() -> None:
    with CascadeCluster(size=4) as cluster:
        cluster.etcd.start()
        cluster.start_agent(0)
        cluster.wait_for(lambda: cluster.primary() == 0, 60.0, "n0 primary")
        for n in (1, 2, 3):
            cluster.start_agent(n)
        cluster.wait_for(lambda: sorted(cluster.replicas()) == [1, 2, 3], 90.0, "three replicas")
        n0, n1 = (cluster.nodes[n].pg_port for n in (0, 1))

        cluster.wait_for(lambda: sender_port(cluster, 2) == n1, 30.0, "n2 streaming from n1")
        cluster.wait_for(lambda: slots(cluster, 1) == {"n2"}, 30.0, "n1 keeping a slot for n2")
        cluster.wait_for(lambda: slots(cluster, 0) == {"n1"}, 30.0, "the leader's slot for n1 alone")
        assert sender_port(cluster, 3) is None  # nostream: no WAL receiver at all
        cluster.write(0, "through the cascade and the archive")
        cluster.sql(0, "SELECT pg_switch_wal()")  # the segment goes to the archive, where n3 reads it
        cluster.wait_replicated("through the cascade and the archive", [1, 2, 3], 30.0)
        members = cluster.rest(0, "/cluster", auth=False)[1]["members"]
        tags = {m["name"]: m.get("tags", {}) for m in members}
        assert tags["n2"].get("replicatefrom") == "n1" and tags["n3"].get("nostream") is True
        # the states Patroni shows: streaming standbys, and the one replaying the archive (as of each member's last
        # turn: a standby whose WAL receiver had not connected yet said "in archive recovery")
        expected = {"n0": "running", "n1": "streaming", "n2": "streaming", "n3": "in archive recovery"}

        def states() -> dict[str, str]:
            return {m["name"]: m["state"] for m in cluster.rest(0, "/cluster", auth=False)[1]["members"]}

        cluster.wait_for(lambda: states() == expected, 30.0, f"the members' states {expected}")
        tree = subprocess.run(
            [sys.executable, "-m", "runtime.ctl", "-c", str(cluster.nodes[0].config_path), "topology", "-f", "json"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert [row["Member"] for row in json.loads(tree)] == ["n0", "+ n1", "+ + n2", "n3"]  # n3 streams from none
        key = json.loads(cluster.etcd.value(f"/service/{cluster.scope}/members/n1") or "{}")
        assert key["replication_state"] == "streaming" and key["receive_lsn"] >= key["replay_lsn"] > 0

        cluster.stop_agent(1)  # its Postgres stops with it: n2 falls back to the leader
        cluster.wait_for(lambda: sender_port(cluster, 2) == n0, 30.0, "n2 streaming from the leader")
        cluster.wait_for(lambda: "n2" in slots(cluster, 0), 30.0, "the leader keeping a slot for n2")
        cluster.write(0, "after n1 went")
        cluster.wait_replicated("after n1 went", [2], 30.0)
