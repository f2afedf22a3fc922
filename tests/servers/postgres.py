"""Real PostgreSQL 15 nodes for tests: settings for node N in one shared base directory, and a cleanup that stops
every server started there, even when the test failed.

The tests run as root and Postgres runs as the `postgres` OS user, which cannot enter pytest's tmp_path
(/tmp/pytest-of-root is mode 0700): the base directory is a fresh one in /dev/shm (no fsync cost), mode 0755, and
each node's data and own directories are made by the adapter, owned by `postgres`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from adapters.postgres.process import find_postmaster, process_alive
from adapters.postgres.server import Postgres
from adapters.postgres.settings import Credentials, PostgresSettings
from adapters.postgres.values import Upstream

from .common import Closing, free_port, wait_until

HOST = "127.0.0.1"
PASSWORDS = {"superuser": "Sup3r-secret:pw", "replication": "Repl1-secret\\pw", "admin": "Adm1n-secret'pw"}


# Small and quick: no fsync on /dev/shm anyway; a standby whose upstream went away retries in 0.2 s, not 5 s.
TEST_PARAMETERS = (
    ("fsync", False),
    ("shared_buffers", "16MB"),
    ("max_connections", 20),
    ("wal_retrieve_retry_interval", "200ms"),
    ("dynamic_shared_memory_type", "mmap"),  # in the data directory: a killed server leaves nothing in /dev/shm
)


class PgNodes(Closing):
    """Settings and `Postgres` adapters for nodes n0, n1, ... of one test cluster; `close()` stops them all."""

    def __init__(self, scope: str = "regent-test") -> None:
        parent = "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"
        self.base = Path(tempfile.mkdtemp(prefix="regent-pg-", dir=parent))
        self.base.chmod(0o755)  # the postgres user must reach the node directories inside
        self.scope = scope
        self.made: dict[str, PostgresSettings] = {}
        self.adapters: list[Postgres] = []

    def settings(self, name: str, **changes: Any) -> PostgresSettings:
        """Settings of node `name` (made once: the same port and directories every time), with `changes` applied."""
        if name not in self.made:
            port = free_port()
            self.made[name] = PostgresSettings(
                name=name,
                scope=self.scope,
                data_dir=self.base / name / "data",
                listen_addresses=(HOST,),
                port=port,
                connect_host=HOST,
                connect_port=port,
                initdb=("--data-checksums", "--encoding=UTF8"),
                pg_hba=(f"host all all {HOST}/32 scram-sha-256",),
                superuser=Credentials("postgres", PASSWORDS["superuser"]),
                replication=Credentials("replicator", PASSWORDS["replication"]),
                admin=Credentials("admin", PASSWORDS["admin"]),
                parameters=TEST_PARAMETERS,
            )
            (self.base / name).mkdir(mode=0o755, exist_ok=True)
        return dataclasses.replace(self.made[name], **changes) if changes else self.made[name]

    def node(self, name: str, **changes: Any) -> Postgres:
        adapter = Postgres(self.settings(name, **changes), start_timeout_s=30, stop_timeout_s=30, command_timeout_s=60)
        self.adapters.append(adapter)
        return adapter

    def upstream(self, name: str) -> Upstream:
        made = self.settings(name)
        return Upstream(name, made.connect_host, made.connect_port)

    def close(self) -> None:
        """Stop every server of this base directory (pg_ctl stop -m immediate), then remove the directory."""
        for data_dir in sorted(self.base.glob("*/data*")):
            stop_immediately(data_dir)
        for adapter in self.adapters:
            adapter.control.reap()
        shutil.rmtree(self.base, ignore_errors=True)


def tcp(settings: PostgresSettings, user: str = "postgres", password: str | None = None, **options: Any) -> Any:
    """A client connection over TCP, as an application or another node makes it (autocommit)."""
    conn = psycopg2.connect(
        host=settings.connect_host,
        port=settings.connect_port,
        user=user,
        password=PASSWORDS["superuser"] if password is None else password,
        dbname=options.pop("dbname", "postgres"),
        connect_timeout=5,
        **options,
    )
    if "connection_factory" not in options:  # a replication connection is always autocommit
        conn.autocommit = True
    return conn


@contextlib.contextmanager
def cursor(settings: PostgresSettings, **options: Any) -> Iterator[psycopg2.extensions.cursor]:
    conn = tcp(settings, **options)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def query(settings: PostgresSettings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def values(settings: PostgresSettings, table: str = "t") -> set[str]:
    """The `v` column of `table` on that node."""
    return {row[0] for row in query(settings, f"SELECT v FROM {table}")}


def wait_for_value(settings: PostgresSettings, value: str, timeout_s: float = 10.0, table: str = "t") -> None:
    """Until a row with `v = value` is visible on that node (a standby replaying it)."""

    def seen() -> bool:
        try:
            return value in values(settings, table)
        except psycopg2.Error:
            return False

    wait_until(seen, timeout_s, f"row {value!r} on {settings.name}", interval_s=0.02)


def auto_conf_keys(settings: PostgresSettings) -> set[str]:
    """The settings in the data directory's postgresql.auto.conf (ALTER SYSTEM's file, copied by clone and rewind)."""
    text = (settings.data_dir / "postgresql.auto.conf").read_text()
    return {line.split("=")[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")}


def primary_with_standbys(nodes: PgNodes, *standbys: str, primary: str = "n0") -> tuple[Postgres, list[Postgres]]:
    """Bootstrap and start `primary`, give each standby a slot, clone it with pg_basebackup and start it."""
    first = nodes.node(primary)
    _must(first.bootstrap(), f"bootstrap {primary}")
    _must(first.start_primary(), f"start {primary}")
    _must(first.ensure_slots(standbys), "slots")
    made = []
    for name in standbys:
        standby = nodes.node(name)
        _must(standby.clone(nodes.upstream(primary)), f"clone {name}")
        _must(standby.start_standby(nodes.upstream(primary)), f"start standby {name}")
        made.append(standby)
    return first, made


def _must(result: Any, what: str) -> None:
    if not result.ok:
        raise AssertionError(f"{what}: {result.detail}")


def stop_immediately(data_dir: Path) -> None:
    """Stop the Postgres of `data_dir`, if one runs: `pg_ctl stop -m immediate` as postgres, SIGKILL if it lingers."""
    found = find_postmaster(data_dir)
    if found is None:
        return
    subprocess.run(
        ["/usr/lib/postgresql/15/bin/pg_ctl", "stop", "-m", "immediate", "-D", str(data_dir)],
        user="postgres",
        group="postgres",
        env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/postgresql", "LC_ALL": "C.UTF-8"},
        cwd="/",
        capture_output=True,
        timeout=30,
        check=False,
    )
    deadline = time.monotonic() + 10
    while process_alive(found.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if process_alive(found.pid):
        os.kill(found.pid, signal.SIGKILL)


def cloning_script(args_file: str | Path = "/dev/null", sleep_s: float = 0) -> str:
    """A `create_replica_methods` script that records its arguments in `args_file`, waits `sleep_s` (a restore
    from a slow backup store), then clones the way a backup tool's restore would."""
    return f"""#!/bin/sh
printf '%s\\n' "$@" > {args_file}
sleep {sleep_s}
for arg; do
    case $arg in
        --datadir=*) datadir=${{arg#--datadir=}};;
        --connstring=*) connstring=${{arg#--connstring=}};;
    esac
done
exec pg_basebackup --pgdata="$datadir" --dbname="$connstring" --wal-method=stream --checkpoint=fast --no-password
"""
