"""Users' own files start a working cluster: Patroni 4.1's postgres0.yml and postgres1.yml, and the seed's
(Governor-era) postgres0.yml and postgres1.yml, each with only its paths and ports changed, on real etcd and
Postgres. The member that initializes the cluster writes `bootstrap.dcs` to the DCS `config` key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from adapters.postgres.runas import OsUser
from tests.servers.cluster import HOST, Cluster, Node

CONFIGS = Path(__file__).parent / "configs"
APP_TRUSTED = f"host all app {HOST}/32 trust"


def app_connects(cluster: Cluster, n: int) -> bool:
    """Whether role `app`, without a password, may connect to node n over TCP."""
    try:
        psycopg2.connect(
            host=HOST, port=cluster.nodes[n].pg_port, user="app", dbname="postgres", connect_timeout=3
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


class FilesCluster(Cluster):
    """A cluster whose members run the users' files (tests/configs), moved onto this cluster's ports and folders."""

    files: tuple[str, ...] = ()

    def config(self, node: Node) -> dict[str, Any]:
        raw = yaml.safe_load((CONFIGS / self.files[node.index]).read_text())
        node.name = raw.get("name") or raw["postgresql"]["name"]  # the member is the file's (its folder stays n<i>)
        raw["restapi"]["listen"] = raw["restapi"]["connect_address"] = f"{HOST}:{node.api_port}"
        raw["etcd"]["host"] = f"{HOST}:{self.etcd.port}"
        pg = raw["postgresql"]
        pg["listen"] = pg["connect_address"] = f"{HOST}:{node.pg_port}"
        pg["data_dir"] = str(node.data_dir)
        if "pgpass" in pg:
            pg["pgpass"] = str(node.data_dir.parent / "pgpass")
        # The files keep the socket and the WAL archive beside the data directory (`..`): Postgres's user owns it.
        user = OsUser.resolve("postgres")
        os.chown(node.data_dir.parent, user.uid, user.gid)
        return raw

    def superuser(self) -> tuple[str, str]:
        pg = yaml.safe_load((CONFIGS / self.files[0]).read_text())["postgresql"]
        role = pg["authentication"]["superuser"] if "authentication" in pg else pg["superuser"]
        return role.get("username", "postgres"), role["password"]

    def connect(self, n: int, timeout_s: int = 3) -> psycopg2.extensions.connection:
        user, password = self.superuser()
        conn = psycopg2.connect(
            host=HOST, port=self.nodes[n].pg_port, user=user, password=password, dbname="postgres",
            connect_timeout=timeout_s,
        )  # fmt: skip
        conn.autocommit = True
        return conn


def files_cluster(files: tuple[str, ...]) -> FilesCluster:
    """`files` is read while the nodes are made (in `Cluster.__init__`): a subclass carries it."""
    return type("Files", (FilesCluster,), {"files": files})(size=len(files))


@pytest.mark.parametrize(
    "files",
    [
        ("patroni-4.1-postgres0.yml", "patroni-4.1-postgres1.yml"),
        ("seed-postgres0.yml", "seed-postgres1.yml"),
    ],
    ids=["patroni-4.1", "seed"],
)
def test_the_users_files_start_a_working_cluster(files: tuple[str, ...]) -> None:
    with files_cluster(files) as cluster:
        primary = cluster.start(timeout_s=120.0).wait_healthy(120.0)
        replica = 1 - primary
        cluster.write(primary, "written through the users own files")
        cluster.wait_replicated("written through the users own files", [replica], 30.0)
        code, stored = cluster.rest(primary, "/config", auth=False)
        assert code == 200
        if files[0].startswith("patroni"):
            # bootstrap.dcs became the config key; the rewind role exists with what pg_rewind needs
            assert (stored["ttl"], stored["loop_wait"], stored["retry_timeout"]) == (30, 10, 10)
            assert stored["postgresql"]["use_pg_rewind"] is True
            granted = cluster.sql(
                primary,
                "SELECT has_function_privilege('rewind_user', 'pg_read_binary_file(text, bigint, bigint, boolean)',"
                " 'execute')",
            )
            assert granted == [(True,)]
            assert Path(cluster.nodes[replica].data_dir.parent / "pgpass").is_file()  # postgresql.pgpass
            # a cluster-wide parameter reaches every member with a reload; one that needs a restart shows pending
            patched = cluster.rest(primary, "/config", "PATCH", {"postgresql": {"parameters": {"work_mem": "8MB"}}})
            assert patched[0] == 200, patched
            for n in (primary, replica):
                cluster.wait_for(lambda n=n: cluster.sql(n, "SHOW work_mem") == [("8MB",)], 30.0, "work_mem 8MB")
            raised = {"postgresql": {"parameters": {"max_connections": 120}}}
            assert cluster.rest(primary, "/config", "PATCH", raised)[0] == 200
            for n in (primary, replica):
                cluster.wait_for(lambda n=n: (cluster.status(n) or {}).get("pending_restart"), 30.0, "pending_restart")
                assert cluster.sql(n, "SHOW max_connections") == [("100",)]  # until a restart applies it
            # the primary first: the standby learns its new value from the WAL, and its own restart applies it
            for n in (primary, replica):
                assert cluster.rest(n, "/restart", "POST", {})[0] == 200
                cluster.wait_for(lambda n=n: cluster.sql(n, "SHOW max_connections") == [("120",)], 60.0, "120")
                cluster.wait_for(lambda n=n: not (cluster.status(n) or {}).get("pending_restart"), 30.0, "applied")
            cluster.write(primary, "after both restarts")
            cluster.wait_replicated("after both restarts", [replica], 30.0)
            # cluster-wide pg_hba lines reach every member with a reload (the file has no postgresql.pg_hba)
            cluster.sql(primary, "CREATE ROLE app LOGIN")
            assert not app_connects(cluster, primary)  # the sample's lines ask it for a password it has not got
            lines = stored["postgresql"]["pg_hba"]
            patched = cluster.rest(primary, "/config", "PATCH", {"postgresql": {"pg_hba": [APP_TRUSTED, *lines]}})
            assert patched[0] == 200, patched
            for n in (primary, replica):
                cluster.wait_for(lambda n=n: app_connects(cluster, n), 30.0, "app let in by the new pg_hba line")
            # use_slots is cluster-wide: off, the standby streams without its slot; on again, through it
            slot = cluster.sql(replica, "SHOW primary_slot_name")[0][0]
            assert slot == cluster.nodes[replica].name  # postgresql1: already a plain slot name
            for use_slots, expected in ((False, ""), (True, slot)):
                patched = cluster.rest(primary, "/config", "PATCH", {"postgresql": {"use_slots": use_slots}})
                assert patched[0] == 200, patched
                cluster.wait_for(
                    lambda expected=expected: cluster.sql(replica, "SHOW primary_slot_name") == [(expected,)],
                    30.0,
                    f"primary_slot_name {expected!r}",
                )
            cluster.write(primary, "through the slot again")
            cluster.wait_replicated("through the slot again", [replica], 30.0)
        else:
            # the file's own timing (`etcd.ttl`, `loop_wait`), and the defaults for the rest, as Patroni writes them
            assert stored == {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576}
            archived = cluster.sql(primary, "SHOW wal_keep_size")[0][0]
            assert archived == "128MB"  # wal_keep_segments: 8, as PostgreSQL 13 and later spell it
