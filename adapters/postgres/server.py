"""`Postgres`: the operations the decision core's postgres actions name, on one node's server.

Every public operation returns a `Result` (Postgres's own message on failure) and never raises for an expected
failure; each is idempotent, so a step interrupted by a crash is simply retried: promote on a primary, stop on a
stopped server, creating a slot that exists are successes that change nothing. Operations that change the server
hold one lock, so the REST API and the agent loop never interleave two of them.

How each action maps (see `fsm.actions` for the contracts):
InitDb -> bootstrap, StartPrimary -> start_primary, StartStandby -> start_standby, FollowLeader -> follow,
StopPostgres -> stop, Promote -> promote, Demote -> demote, RewindFromLeader -> rewind, CloneReplica -> clone,
Reclone -> reclone, RestartPrimary and RestartStandby -> restart,
EnsureReplicationSlots -> ensure_slots, SetSyncStandby -> set_synchronous_standby,
PrepareSyncStandby -> prepare_synchronous_standby.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql as q

from adapters.errors import ConfigError
from fsm.actions import DemoteMode, StopMode
from fsm.observation import DataDir, PostgresState

from . import observe as facts
from . import standby_floors as floors
from . import sync
from .access import open_the_way
from .files import ConfError, NodeState, OwnFiles
from .process import PostmasterControl
from .replicas import Replicas, ensure_slots, move_aside
from .runas import OsUser, Ran, Runner
from .settings import Credentials, PostgresSettings, ReplicaMethod
from .sql import Sql, SqlError, pg_message
from .values import ClusterSettings, ReplicaStatus, Result, Upstream, done, failed

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Result])

REPLICATION_QUERY = """
SELECT application_name, state, sync_state,
       ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)
        - replay_lsn)::bigint
  FROM pg_stat_replication ORDER BY application_name, pid
"""


def _operation(method: F) -> F:
    """Serialise operations that change the server, log their outcome, and turn a surprise into a failed Result
    (the agent loop must go on; the traceback goes to the log)."""

    @wraps(method)
    def run(self: Postgres, *args: Any, **kwargs: Any) -> Result:
        with self._lock:
            try:
                result = method(self, *args, **kwargs)
            except (OSError, ConfError, SqlError) as error:
                result = failed(str(error))
            except Exception as error:
                log.exception("%s failed unexpectedly", method.__name__)
                result = failed(f"unexpected {type(error).__name__}: {error}")
        log.log(logging.INFO if result.ok else logging.WARNING, "%s: %s", method.__name__, result.detail or "done")
        return result

    return run  # type: ignore[return-value]


class Postgres:
    """One node's Postgres. Raises `OsUserError` (a ConfigError naming postgresql.os_user) when built for an OS
    user that cannot run Postgres; nothing else raises."""

    def __init__(
        self,
        settings: PostgresSettings,
        *,
        start_timeout_s: float | None = None,  # default: postgresql.pg_ctl_timeout
        stop_timeout_s: float | None = None,
        command_timeout_s: float = 3600.0,  # pg_basebackup, pg_rewind, replica scripts: as long as the data takes
        sql_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.user = OsUser.resolve(settings.os_user)
        self.runner = Runner(self.user, settings.bin_dir, passfile=settings.pgpass_file)
        self.files = OwnFiles(settings, self.runner)
        self.control = PostmasterControl(self.runner, self.files)
        self.sql = Sql(self.files, sql_timeout_s)
        self.replicas = Replicas(self.runner, self.files, command_timeout_s)
        self.start_timeout_s = settings.pg_ctl_timeout_s if start_timeout_s is None else start_timeout_s
        self.stop_timeout_s = settings.pg_ctl_timeout_s if stop_timeout_s is None else stop_timeout_s
        self.last_rewind_failed = False  # remove_data_directory_on_rewind_failure asks about the last pg_rewind
        self.command_timeout_s = command_timeout_s
        self._lock = threading.RLock()

    def check_access(self) -> None:
        """Raise ConfigError naming each path Postgres's OS user cannot use (after opening what may be opened)."""
        s = self.settings
        paths = [("postgresql.data_dir", s.data_dir), ("postgresql.config_dir", s.own_dir)]
        paths.append(("postgresql.pgpass", s.pgpass_file))
        problems = open_the_way(self.user, paths, s.own_dir, s.config_folder)
        if problems:
            raise ConfigError(problems)

    # --- facts -------------------------------------------------------------------------------------------

    def observe(self) -> PostgresState:
        return facts.observe(self.runner, self.files, self.control, self.sql)

    def replication_status(self) -> list[ReplicaStatus]:
        """Each standby streaming from this node, with its lag in bytes behind this node's WAL ([] when down)."""
        if self.control.current() is None:
            return []
        try:
            rows = self.sql.rows(REPLICATION_QUERY)
        except SqlError as error:
            log.debug("replication status unavailable: %s", error)
            return []
        return [ReplicaStatus(name, state, sync, None if lag is None else int(lag)) for name, state, sync, lag in rows]

    @property
    def running(self) -> bool:
        return self.control.current() is not None

    # --- bootstrap ---------------------------------------------------------------------------------------

    @_operation
    def bootstrap(self) -> Result:
        """initdb, our own files, the bootstrap roles; leaves the server stopped (StartPrimary opens it)."""
        s = self.settings
        if self.running:
            return done("already initialized and running")
        kind, control = facts.classify(self.runner, s.data_dir)
        if kind is DataDir.VALID:
            return done(f"already initialized (system identifier {getattr(control, 'system_identifier', '?')})")
        notes = []
        if kind is DataDir.BROKEN:
            notes.append(f"moved the unusable data directory aside to {move_aside(s.data_dir).name} ({control})")
        self.files.make_dir()
        self.runner.make_dir(s.data_dir, 0o700)
        ran = self._initdb()
        if not ran.ok:
            return failed("; ".join([*notes, ran.message()]))
        self.files.set_standby_signal(False)
        self.files.write_all(NodeState())
        # A private start: no TCP listener while the roles are made, and no statement logging of their creation.
        started = self.control.start(self.start_timeout_s, ("listen_addresses=", "log_statement=none"))
        problem = "" if started else f"initdb done, but the first start failed: {started.detail}"
        if started:
            try:
                self._create_roles()
            except SqlError as error:
                problem = f"cannot create the bootstrap roles: {error}"
        if problem:
            self.control.stop(StopMode.IMMEDIATE, self.stop_timeout_s)
            moved = move_aside(s.data_dir)  # InitDb is a no-op on a valid directory: a retry must start afresh
            return failed("; ".join([*notes, f"{problem}; moved the new cluster aside to {moved.name}"]))
        stopped = self.control.stop(StopMode.FAST, self.stop_timeout_s)
        if not stopped:
            return failed(f"initialized, but the private server did not stop: {stopped.detail}")
        return done("; ".join([*notes, f"initialized {s.data_dir} in {ran.elapsed_s:.2f} s"]))

    def _initdb(self) -> Ran:
        s = self.settings
        password = s.superuser.password
        argv = [self.runner.program("initdb"), "--pgdata", str(s.data_dir), "--username", s.superuser.username]
        # Our own pg_hba.conf rules; these only shape the unused copy initdb leaves in the data directory.
        if password:
            argv += ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"]
        else:
            argv += ["--auth-local=peer", "--auth-host=reject"]
        pwfile = self.files.dir / f".pwfile-{os.getpid()}"
        try:
            if password:
                self.runner.write_file(pwfile, password + "\n")  # never on a command line
                argv.append(f"--pwfile={pwfile}")
            return self.runner.run([*argv, *s.initdb], self.command_timeout_s)
        finally:
            pwfile.unlink(missing_ok=True)

    def _create_roles(self) -> None:
        s = self.settings
        conn = self.sql.connect()
        try:
            with conn.cursor() as cur:
                if s.replication.username != s.superuser.username:
                    _ensure_role(cur, s.replication, "REPLICATION LOGIN")
                if s.admin is not None and s.admin.username not in (s.superuser.username, s.replication.username):
                    _ensure_role(cur, s.admin, "LOGIN CREATEDB CREATEROLE")
                if s.rewind is not None and s.rewind.username != s.superuser.username:
                    _ensure_role(cur, s.rewind, "LOGIN")
                    for function in REWIND_FUNCTIONS:  # what pg_rewind reads on its source, and nothing more
                        grant = q.SQL(f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {{}}")
                        cur.execute(grant.format(q.Identifier(s.rewind.username)))
        except psycopg2.Error as error:
            raise SqlError(pg_message(error)) from None
        finally:
            conn.close()

    # --- lifecycle ---------------------------------------------------------------------------------------

    def _start(self, standby: bool | None, state: NodeState | None = None, timeout_s: float | None = None) -> Result:
        """Start with our files rewritten from the current settings and `state` (default: as they say now).
        `standby`: True writes standby.signal, False removes it, None keeps the role the data directory last had."""
        kind, control = facts.classify(self.runner, self.settings.data_dir)
        if kind is not DataDir.VALID:
            return failed(f"cannot start: data directory {kind.value} ({control or 'empty'})")
        state = dataclasses.replace(self.files.read_state() if state is None else state, raised=())
        self.files.write_all(state)
        removed = self.files.clean_auto_conf()
        if removed:
            log.info("removed node settings from postgresql.auto.conf: %s", ", ".join(removed))
        if standby is not None:
            self.files.set_standby_signal(standby)
        if isinstance(control, facts.ControlData) and (self.settings.data_dir / "standby.signal").exists():
            raised = floors.raised(self.runner, self.settings.data_dir, self.files.conf, control.floors)
            if raised:
                self.files.write_conf(dataclasses.replace(state, raised=raised))
        return self.control.start(self.start_timeout_s if timeout_s is None else timeout_s)

    @_operation
    def start_primary(self) -> Result:
        """Start a stopped server as it last ran: a primary as a primary, a standby as a standby (Promote then
        gives it a new timeline). A no-op when it runs."""
        if self.running:
            return done("already running")
        return self._start(standby=None)

    @_operation
    def start_standby(self, upstream: Upstream | None) -> Result:
        """Run as a standby of `upstream` (None: of nobody). A running primary is stopped first (fast) so that no
        writable server is left running; a running standby is re-pointed with a reload."""
        if self._runs_as_standby():
            return self._repoint(upstream)
        stopped = self.control.stop(StopMode.FAST, self.stop_timeout_s)
        if not stopped:
            return failed(f"cannot stop the primary to restart it as a standby: {stopped.detail}")
        return self._start(standby=True, state=NodeState(upstream, None))

    @_operation
    def follow(self, upstream: Upstream | None) -> Result:
        """Re-point a running standby at `upstream`: primary_conninfo and primary_slot_name change with a reload."""
        if not self._runs_as_standby():
            return failed("not running as a standby: nothing to re-point (StartStandby starts one)")
        return self._repoint(upstream)

    def _runs_as_standby(self) -> bool:
        """Running, in recovery, and staying there: standby.signal is there too. A primary in crash recovery is in
        recovery but about to take writes, so it does not count."""
        state = self.observe()
        return state.running and state.in_recovery and (self.settings.data_dir / "standby.signal").exists()

    def _repoint(self, upstream: Upstream | None) -> Result:
        current = self.files.read_state()
        if current.upstream == upstream:
            return done(f"already following {upstream.name if upstream else 'nobody'}")
        self.files.write_all(NodeState(upstream, None, current.raised))
        self.files.set_standby_signal(True)
        reloaded = self._reload()
        if not reloaded:
            return reloaded
        return done(f"now following {upstream.name if upstream else 'nobody'} (reloaded)")

    @_operation
    def stop(self, mode: StopMode | str = StopMode.FAST) -> Result:
        return self.control.stop(StopMode(mode), self.stop_timeout_s)

    @_operation
    def restart(self, timeout_s: float | None = None) -> Result:
        """Stop (fast) and start again in the same role, with the current settings; the start may take `timeout_s`
        (default: the adapter's start timeout)."""
        stopped = self.control.stop(StopMode.FAST, self.stop_timeout_s)
        if not stopped:
            return stopped
        return self._start(standby=None, timeout_s=timeout_s)

    @_operation
    def reload(self) -> Result:
        """Rewrite our files from the settings and reload. Fails, with Postgres's words, on a setting it rejected;
        says which changed settings wait for a restart."""
        if not self.running:
            return failed("Postgres is not running")
        self.files.write_all()
        return self._reload()

    def _reload(self) -> Result:
        sent = self.control.signal(signal.SIGHUP)
        if not sent:
            return sent
        try:
            rejected = self.sql.rows("SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL")
            pending = [row[0] for row in self.sql.rows("SELECT name FROM pg_settings WHERE pending_restart")]
        except SqlError as error:
            return done(f"reload signalled (its outcome unknown: {error})")
        if rejected:
            return failed("; ".join(f"{name or '(file)'}: {error}" for name, error in rejected))
        return done(f"reloaded; a restart would apply: {', '.join(pending)}" if pending else "reloaded")

    # --- roles ---------------------------------------------------------------------------------------------

    @_operation
    def promote(self, timeout_s: float = 60.0) -> Result:
        """Make the running server writable: promote a standby. A no-op on a writable primary; fails on a stopped
        server (it never starts one) and on a primary fenced by default_transaction_read_only, which our files
        never set (that is the user's `parameters`)."""
        if not self.running:
            return failed("Postgres is not running; promote never starts it")
        try:
            in_recovery, read_only = self.sql.one(
                "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
            )
        except SqlError:
            in_recovery, read_only = True, False  # still starting up: a standby to promote
        if not in_recovery:
            if read_only:
                return failed("a primary with default_transaction_read_only on (set in postgresql.parameters)")
            return done("already a writable primary")
        started = time.monotonic()
        ran = self.runner.run(
            [self.runner.program("pg_ctl"), "promote", "--no-wait", "--pgdata", str(self.settings.data_dir)],
            timeout_s,
        )
        if not ran.ok:
            return failed(ran.message())
        writable = self._wait_writable(started + timeout_s)
        if not writable:
            return writable
        state = self.files.read_state()
        self.files.write_all(NodeState(None, state.sync_standby))  # a primary follows nobody
        return done(f"promoted in {time.monotonic() - started:.3f} s")

    def _wait_writable(self, deadline: float) -> Result:
        conn: psycopg2.extensions.connection | None = None
        last = "no answer"
        try:
            while time.monotonic() < deadline:
                try:
                    conn = conn or self.sql.connect()
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_is_in_recovery()")
                        row = cur.fetchone()
                    if row is not None and not row[0]:
                        return done()
                    last = "still in recovery"
                except (SqlError, psycopg2.Error) as error:
                    last = pg_message(error) if isinstance(error, psycopg2.Error) else str(error)
                    if conn is not None:
                        conn.close()
                        conn = None
                time.sleep(0.01)
        finally:
            if conn is not None:
                conn.close()
        return failed(f"promotion requested, but the server is not writable yet: {last}")

    @_operation
    def demote(self, mode: DemoteMode | str) -> Result:
        """Stop taking writes. graceful: CHECKPOINT then a fast shutdown (standbys receive all WAL); immediate: an
        immediate shutdown; read-only: restart as a standby of nobody so that reads go on. A no-op when the server
        takes no writes already."""
        mode = DemoteMode(mode)
        if not self.running:
            return done("not running")
        if self._runs_as_standby():
            return done("a standby already takes no writes")
        if mode is DemoteMode.IMMEDIATE:
            return self.control.stop(StopMode.IMMEDIATE, self.stop_timeout_s)
        note = ""
        if mode is DemoteMode.GRACEFUL:  # read-only is for a lease in doubt: no checkpoint while writes go on
            try:
                self.sql.execute("CHECKPOINT", timeout_s=max(self.stop_timeout_s, 5.0))  # a shorter shutdown
            except SqlError as error:
                note = f" (checkpoint failed: {error})"
        stopped = self.control.stop(StopMode.FAST, self.stop_timeout_s)  # ends every session first
        if not stopped or mode is DemoteMode.GRACEFUL:
            return Result(stopped.ok, stopped.detail + note)
        started = self._start(standby=True, state=NodeState(None, None))
        return Result(started.ok, f"read-only standby of nobody: {started.detail}{note}")

    # --- replicas ------------------------------------------------------------------------------------------

    @_operation
    def clone(self, upstream: Upstream, methods: Sequence[ReplicaMethod] | None = None) -> Result:
        """Fill an empty data directory from `upstream` (methods default to the settings'). A non-empty unusable
        directory is moved aside; a valid one is refused (Reclone replaces it)."""
        if self.running:
            return failed("Postgres runs on this data directory: refusing to clone over it")
        return self.replicas.clone(upstream, methods or self.settings.create_replica_methods)

    @_operation
    def reclone(self, upstream: Upstream, methods: Sequence[ReplicaMethod] | None = None) -> Result:
        """Move the data directory aside and clone afresh; once the clone succeeded, the old directory is deleted
        if `remove_data_directory_on_diverged_timelines` (or `..._on_rewind_failure` after a failed pg_rewind) says
        so, else kept. A running standby is stopped first; a writable server is refused: demote it first."""
        if self.running and not self._runs_as_standby():
            return failed("Postgres takes writes: demote it before re-cloning")
        if self.running:
            stopped = self.control.stop(StopMode.FAST, self.stop_timeout_s)
            if not stopped:
                return stopped
        s = self.settings
        remove = s.remove_data_directory_on_diverged_timelines or (
            s.remove_data_directory_on_rewind_failure and self.last_rewind_failed
        )
        return self.replicas.clone(upstream, methods or s.create_replica_methods, replace=True, remove_old=remove)

    @_operation
    def rewind(self, upstream: Upstream) -> Result:
        """pg_rewind the stopped data directory from `upstream`, then make it a standby of it (started by
        StartStandby). Our own files, outside the data directory, keep this node's port and slot."""
        if self.running:
            return failed("Postgres is running: stop it before pg_rewind")
        result = self.replicas.rewind(upstream)
        self.last_rewind_failed = not result.ok
        return result

    @_operation
    def apply_cluster_settings(self, cluster: ClusterSettings) -> Result:
        """Write the cluster-wide parameters to cluster.conf (this member's own postgresql.parameters, later in
        postgresql.conf, win), the pg_hba lines to pg_hba.conf (unless this member has its own) and use_slots to a
        standby's primary_slot_name, and reload; what needs a restart is named, and shows as pending_restart."""
        if self.files.read_cluster_settings() == cluster and self.control.current() is not None:
            return done("cluster-wide settings already applied")
        try:
            self.files.write_cluster_settings(cluster)
        except (OSError, ConfError) as error:
            return failed(f"cannot write {self.files.cluster_conf}: {error}")
        if self.control.current() is None:
            return done("cluster-wide settings written; Postgres is not running")
        return self._reload()

    @_operation
    def ensure_slots(self, members: Sequence[str]) -> Result:
        """The slots of the members that stream from this server: on the primary, or on a cascading standby."""
        if not self.running:
            return failed("slots are managed on a running server")
        return ensure_slots(self.sql, self.settings.name, members)

    @_operation
    def prepare_synchronous_standby(self, name: str | None, timeout_s: float = 10.0) -> Result:
        """Make our settings' synchronous_standby_names name `name` (None: nobody) before this server takes writes
        (PrepareSyncStandby): the upstream is kept, whatever the role. A stopped server gets the file only (it reads
        it when it starts); a running one, standby or primary, is reloaded, and the call returns once a new session
        sees the new value (the postmaster has read it and signalled every process; a server that answers no
        query yet, still starting, reads it before it takes writes). Waits for no standby."""
        current = self.files.read_state()
        if current.sync_standby != name:
            self.files.write_all(NodeState(current.upstream, name))
        wanted = f"synchronous_standby_names {'naming ' + name if name else 'empty'}"
        if self.control.current() is None:
            return done(f"{wanted} in our settings; Postgres is not running")
        reloaded = self._reload()
        if not reloaded:
            return reloaded
        try:
            ok, last = sync.poll(lambda: sync.names_shown(self.sql, frozenset({name} - {None})), timeout_s)
        except SqlError as error:
            return done(f"{wanted}, reload signalled (not confirmed: {error})")
        if ok:
            return done(f"{wanted} (reloaded)")
        return failed(f"{wanted} written and reloaded, but after {timeout_s} s the server shows {last}")

    @_operation
    def set_synchronous_standby(self, name: str | None, timeout_s: float = 10.0) -> Result:
        """Make `name` the synchronous standby (None: nobody) through our config file and a reload. Adding one
        waits until pg_stat_replication reports it `sync`; removing one waits until new sessions see the change.
        A standby that does not become sync in time fails the call but stays named: commits wait for it until the
        next decision names another or nobody."""
        state = self.observe()
        if not state.running or state.in_recovery:
            return failed("synchronous_standby_names is set on a running primary")
        current = self.files.read_state()
        if current.sync_standby != name:
            self.files.write_all(NodeState(current.upstream, name))
            reloaded = self._reload()
            if not reloaded:
                return reloaded
        if name is None:
            ok, last = sync.poll(lambda: sync.names_cleared(self.sql), timeout_s)
        else:
            ok, last = sync.poll(lambda: sync.reported_sync(self.sql, name), timeout_s)
        if ok:
            return done(f"{name} is the synchronous standby" if name else "no synchronous standby")
        return failed(f"synchronous_standby_names set, but after {timeout_s} s {last}")


# The functions pg_rewind calls on its source server (PostgreSQL's documentation of pg_rewind, "Notes").
REWIND_FUNCTIONS = (
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
)


def _ensure_role(cur: psycopg2.extensions.cursor, who: Credentials, options: str) -> None:
    """Create (or alter) a role with `options`. The password goes as a SCRAM verifier computed here, so the clear
    text never reaches the server, a statement log or an error message."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (who.username,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    statement = q.SQL(f"{verb} ROLE {{}} WITH {options}").format(q.Identifier(who.username))
    if who.password is None:
        cur.execute(statement)
        return
    verifier = psycopg2.extensions.encrypt_password(who.password, who.username, cur.connection, "scram-sha-256")
    cur.execute(statement + q.SQL(" PASSWORD {}").format(q.Literal(verifier)))
