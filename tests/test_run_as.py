"""The agent runs as root or as the `postgres` user, on one real cluster: n0 and n1 run as `postgres` from the
start (Postgres, its fence and every file then belong to that user, and no switch of user happens), n2 as root
(Postgres runs as `postgres`). n2 then moves from root to `postgres` on the same data directory, as a node moved to
Debian's packaging or Patroni's systemd unit would, and keeps streaming. A file a run as root left that the
`postgres` user cannot write is named in one line, and the agent exits with status 2 before touching anything."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.servers.cluster import REPO, Cluster, Node

POSTGRES = pwd.getpwnam("postgres")


def uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def as_postgres() -> dict[str, object]:
    """Popen's arguments that run a child as the `postgres` user, with its own HOME."""
    env = {**os.environ, "HOME": POSTGRES.pw_dir, "USER": "postgres", "LOGNAME": "postgres"}
    groups = os.getgrouplist("postgres", POSTGRES.pw_gid)
    return {"user": POSTGRES.pw_uid, "group": POSTGRES.pw_gid, "extra_groups": groups, "env": env}


class MixedCluster(Cluster):
    """Agents of the nodes in `postgres_run` run as the `postgres` user, the others as root."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.postgres_run = {0, 1}

    def config(self, node: Node) -> dict[str, object]:
        # each node's folder belongs to postgres, as a data directory's parent does in a packaged install
        os.chown(node.data_dir.parent, POSTGRES.pw_uid, POSTGRES.pw_gid)
        return super().config(node)

    def agent_identity(self, node: Node) -> dict[str, object]:
        return as_postgres() if node.index in self.postgres_run else {}


@pytest.fixture(scope="module")
def cluster() -> Iterator[MixedCluster]:
    assert os.access(sys.executable, os.X_OK), sys.executable
    probe = subprocess.run(
        [sys.executable, "-c", "import fsm, psycopg2"], cwd=REPO, capture_output=True, **as_postgres()
    )  # type: ignore[call-overload]
    assert probe.returncode == 0, f"postgres cannot run {sys.executable} (scripts/setup): {probe.stderr}"
    with MixedCluster(3) as made:
        made.start()
        yield made


def test_agents_run_as_postgres_or_root_and_postgres_always_as_postgres(cluster: MixedCluster) -> None:
    for node in cluster.nodes:
        assert node.process is not None
        assert uid_of(node.process.pid) == (POSTGRES.pw_uid if node.index in cluster.postgres_run else 0)
        postmaster = node.postmaster_pid()
        assert postmaster is not None and uid_of(postmaster) == POSTGRES.pw_uid
        own = node.data_dir.with_name("data.regent")
        assert {path.stat().st_uid for path in [node.data_dir, own, *own.iterdir()]} == {POSTGRES.pw_uid}
    leader = cluster.primary()
    assert leader is not None
    cluster.write(leader, "as-postgres-or-root")
    cluster.wait_replicated("as-postgres-or-root", cluster.others(leader))


def test_a_node_moves_from_root_to_the_postgres_user(cluster: MixedCluster) -> None:
    cluster.stop_agent(2)
    cluster.postgres_run = {0, 1, 2}
    cluster.start_agent(2)
    leader = cluster.wait_healthy(60)
    assert uid_of(cluster.nodes[2].process.pid) == POSTGRES.pw_uid  # type: ignore[union-attr]
    assert "Permission denied" not in cluster.nodes[2].log_text()
    cluster.write(leader, "after-the-move")
    cluster.wait_replicated("after-the-move", cluster.others(leader))


def test_a_file_the_postgres_user_cannot_write_is_named_and_the_agent_exits_2(cluster: MixedCluster) -> None:
    node = cluster.nodes[2]
    cluster.stop_agent(2)
    log = node.data_dir.with_name("data.regent") / "postgresql.log"
    os.chown(log, 0, 0)  # as a run as root of an older Regent left it
    log.chmod(0o600)
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "runtime", str(node.config_path)], cwd=REPO, capture_output=True, text=True,
            timeout=30, **as_postgres(),  # type: ignore[call-overload]
        )  # fmt: skip
    finally:
        os.chown(log, POSTGRES.pw_uid, POSTGRES.pw_gid)
        cluster.start_agent(2)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip().splitlines() == [
        f"{node.config_path}: postgresql.config_dir: {log} (mode 0600, owner root) is not writable by postgres, "
        "who runs Postgres (chown it)"
    ]
    cluster.wait_healthy(60)
