"""SQL on the local Postgres: the agent connects over the unix socket in its own directory as the superuser, in
autocommit, with short connect and statement timeouts (an agent loop must never hang on a query). Errors come out as
`SqlError` carrying Postgres's own message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .files import OwnFiles


class SqlError(Exception):
    """A connection or a statement failed; the message is Postgres's (or libpq's)."""


def pg_message(error: BaseException) -> str:
    """Postgres's primary message (with its detail), or libpq's first line for a connection failure."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary} ({detail})" if detail else primary
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect_remote(
    host: str, port: int, user: str, password: str | None, timeout_s: float, statement_timeout_s: float
) -> psycopg2.extensions.connection:
    """A connection to another member over TCP (autocommit); raises SqlError."""
    try:
        conn = psycopg2.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname="postgres",
            application_name="regent",
            connect_timeout=max(1, round(timeout_s)),
            options=f"-c statement_timeout={int(statement_timeout_s * 1000)}",
        )
    except psycopg2.Error as error:
        raise SqlError(pg_message(error)) from None
    conn.autocommit = True
    return conn


class Sql:
    """Connections to the local server described by `files`."""

    def __init__(self, files: OwnFiles, timeout_s: float = 5.0) -> None:
        self.files = files
        self.timeout_s = timeout_s

    def _open(self, timeout: float, **kwargs: Any) -> psycopg2.extensions.connection:
        """A connection over our socket as the superuser; psycopg2's errors become SqlError."""
        s = self.files.settings
        try:
            return psycopg2.connect(
                host=str(self.files.socket_dir),
                port=s.port,
                user=s.superuser.username,
                password=s.superuser.password,
                dbname="postgres",
                application_name="regent",
                connect_timeout=max(1, round(timeout)),
                **kwargs,
            )
        except psycopg2.Error as error:
            raise SqlError(pg_message(error)) from None

    def connect(self, timeout_s: float | None = None) -> psycopg2.extensions.connection:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        conn = self._open(timeout, options=f"-c statement_timeout={int(timeout * 1000)}")
        conn.autocommit = True
        return conn

    def replay_timeline(self, timeout_s: float | None = None) -> int:
        """The timeline a running standby replays now, from IDENTIFY_SYSTEM on a replication connection to itself.
        SQL has no such function in PostgreSQL 15: pg_stat_wal_receiver shows it only while the WAL receiver is
        connected, and the control file's timelines lag until the next restartpoint, for minutes after a failover."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        conn = self._open(timeout, connection_factory=psycopg2.extras.PhysicalReplicationConnection)
        try:
            with conn.cursor() as cur:
                cur.execute("IDENTIFY_SYSTEM")
                row = cur.fetchone()
        except psycopg2.Error as error:
            raise SqlError(pg_message(error)) from None
        finally:
            conn.close()
        if row is None:
            raise SqlError("IDENTIFY_SYSTEM returned no row")
        return int(row[1])

    @contextlib.contextmanager
    def cursor(self, timeout_s: float | None = None) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on a fresh connection, closed afterwards; any psycopg2 error becomes SqlError."""
        conn = self.connect(timeout_s)
        try:
            with conn.cursor() as cur:
                yield cur
        except psycopg2.Error as error:
            raise SqlError(pg_message(error)) from None
        finally:
            conn.close()

    def rows(self, query: str, params: Sequence[Any] = (), timeout_s: float | None = None) -> list[tuple[Any, ...]]:
        with self.cursor(timeout_s) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def one(self, query: str, params: Sequence[Any] = (), timeout_s: float | None = None) -> tuple[Any, ...]:
        found = self.rows(query, params, timeout_s)
        if not found:
            raise SqlError(f"no row from: {query}")
        return found[0]

    def execute(self, query: str, params: Sequence[Any] = (), timeout_s: float | None = None) -> None:
        with self.cursor(timeout_s) as cur:
            cur.execute(query, params)
