"""Making and mending replicas: clone (pg_basebackup or a `create_replica_methods` script), pg_rewind, replication
slots, and moving an unusable data directory aside.

A data directory in the way is renamed to `<data_dir>.moved-<timestamp>`, and deleted only once a re-clone has
succeeded and `remove_data_directory_on_*` asks for it. After a clone or a
rewind the data directory holds the source's postgresql.conf and postgresql.auto.conf; our own files rule (they are
outside it) once the auto.conf keys that would override them are removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg2

from fsm.observation import DataDir

from .files import NodeState, OwnFiles, conninfo
from .observe import ControlData, classify, dir_empty
from .runas import Ran, Runner
from .settings import ReplicaMethod
from .sql import Sql, SqlError, connect_remote, pg_message
from .values import Result, Upstream, done, failed, slot_name

log = logging.getLogger(__name__)


def move_aside(data_dir: Path) -> Path:
    """Rename `data_dir` to `<data_dir>.moved-<timestamp>` (a suffix if taken); raises OSError if it cannot."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = data_dir.with_name(f"{data_dir.name}.moved-{stamp}")
    count = 1
    while target.exists():
        count += 1
        target = data_dir.with_name(f"{data_dir.name}.moved-{stamp}-{count}")
    data_dir.rename(target)
    log.warning("moved data directory %s aside to %s", data_dir, target)
    return target


def _remove(path: Path) -> str:
    """Delete a moved-aside data directory (the config asked for it); a failure is noted, never raised."""
    try:
        shutil.rmtree(path)
    except OSError as error:
        log.warning("could not remove %s: %s", path, error)
        return f"could not remove {path.name}: {error.strerror}"
    log.warning("removed the old data directory %s (remove_data_directory_on_* is set)", path)
    return f"removed {path.name}"


class Replicas:
    """Clone and rewind the data directory of one node, as its OS user."""

    def __init__(self, runner: Runner, files: OwnFiles, timeout_s: float) -> None:
        self.runner = runner
        self.files = files
        self.settings = files.settings
        self.timeout_s = timeout_s

    # --- clone -------------------------------------------------------------------------------------------

    def clone(
        self, upstream: Upstream, methods: Sequence[ReplicaMethod], replace: bool = False, remove_old: bool = False
    ) -> Result:
        """Fill the data directory from `upstream`, trying `methods` in order. A valid data directory is refused
        unless `replace` (a re-clone); a non-empty one is moved aside first, unless the method keeps data, and
        deleted once the clone succeeded if `remove_old`. The server must be stopped (the caller checks)."""
        data_dir = self.settings.data_dir
        if not methods:
            return failed("no create_replica_methods to clone with")
        kind, control = classify(self.runner, data_dir)
        if kind is DataDir.VALID and not replace:
            sysid = getattr(control, "system_identifier", "?")
            return failed(f"refusing to clone over {data_dir}: it holds a valid cluster (system identifier {sysid})")
        notes: list[str] = []
        moved: list[Path] = []
        try:
            self.files.write_all()  # the pgpass the tools read
        except OSError as error:
            return failed(f"cannot write {self.files.dir}: {error}")
        for method in methods:
            try:
                if not dir_empty(data_dir) and not method.keep_data:
                    moved.append(move_aside(data_dir))
                    notes.append(f"moved {data_dir.name} aside to {moved[-1].name}")
                self.runner.make_dir(data_dir, 0o700)
            except OSError as error:
                return failed("; ".join([*notes, f"cannot prepare {data_dir}: {error}"]))
            started = time.monotonic()
            ran = self._basebackup(upstream) if method.builtin else self._script(upstream, method)
            elapsed = time.monotonic() - started
            if ran.ok:
                kind, control = classify(self.runner, data_dir)
                if kind is DataDir.VALID:
                    self._finish(upstream)
                    if remove_old:
                        notes += [_remove(path) for path in moved]
                    return done("; ".join([*notes, f"cloned from {upstream.name} by {method.name} in {elapsed:.2f} s"]))
                notes.append(f"{method.name} left no valid data directory ({control or 'empty'})")
            else:
                notes.append(f"{method.name} failed: {ran.message()}")
            log.warning("clone from %s: %s", upstream.name, notes[-1])
        try:
            if not dir_empty(data_dir):  # leave no half-made cluster where a start could pick it up
                notes.append(f"moved the leftovers aside to {move_aside(data_dir).name}")
                self.runner.make_dir(data_dir, 0o700)
        except OSError as error:
            notes.append(f"cannot move the leftovers aside: {error}")
        return failed("; ".join(notes))

    def _basebackup(self, upstream: Upstream) -> Ran:
        s = self.settings
        source = conninfo(
            host=upstream.host,
            port=upstream.port,
            user=s.replication.username,
            application_name=f"{s.name}_clone",
            connect_timeout=5,
        )
        argv = [
            self.runner.program("pg_basebackup"),
            "--pgdata", str(s.data_dir),
            "--dbname", source,
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-password",
            *s.basebackup_options,  # after ours: pg_basebackup takes the last of a repeated option
        ]  # fmt: skip
        return self.runner.run(argv, self.timeout_s)

    def _script(self, upstream: Upstream, method: ReplicaMethod) -> Ran:
        s = self.settings
        source = conninfo(
            host=upstream.host, port=upstream.port, user=s.replication.username, dbname="postgres", connect_timeout=5
        )
        argv = [
            *method.command,
            f"--scope={s.scope}",
            f"--datadir={s.data_dir}",
            "--role=replica",
            f"--connstring={source}",
            *(f"--{key}={value}" for key, value in method.parameters),
        ]
        return self.runner.run(argv, self.timeout_s)

    def _finish(self, upstream: Upstream) -> None:
        """Make a fresh copy ours: no pid file of the source, none of its node settings, a standby of `upstream`."""
        data_dir = self.settings.data_dir
        data_dir.chmod(0o700)
        for leftover in ("postmaster.pid", "postmaster.opts"):
            (data_dir / leftover).unlink(missing_ok=True)
        self.point_at(upstream)

    def point_at(self, upstream: Upstream) -> None:
        """Our files say: a standby of `upstream`; the data directory's copied settings no longer override them."""
        removed = self.files.clean_auto_conf()
        if removed:
            log.info("removed copied node settings from postgresql.auto.conf: %s", ", ".join(removed))
        self.files.set_standby_signal(True)
        self.files.write_all(NodeState(upstream, None))

    # --- rewind ------------------------------------------------------------------------------------------

    def rewind(self, upstream: Upstream) -> Result:
        """pg_rewind the (stopped) data directory from the running `upstream`, then make it a standby of it."""
        s = self.settings
        kind, control = classify(self.runner, s.data_dir)
        if not isinstance(control, ControlData):
            return failed(f"nothing to rewind: data directory {kind.value} ({control or 'empty'})")
        self.files.write_all()  # the pgpass pg_rewind reads
        started = time.monotonic()
        for step in (lambda: self._clean_shutdown(control), lambda: self._checkpoint_after_promotion(upstream)):
            result = step()
            if not result:
                return result
        source = conninfo(
            host=upstream.host,
            port=upstream.port,
            user=(s.rewind or s.superuser).username,
            dbname="postgres",
            connect_timeout=5,
        )
        argv = [self.runner.program("pg_rewind"), f"--target-pgdata={s.data_dir}", f"--source-server={source}"]
        ran = self.runner.run(argv, self.timeout_s)
        said = [line.strip() for line in (ran.stderr + ran.stdout).splitlines() if line.startswith("pg_rewind:")]
        if not ran.ok:
            return failed(f"pg_rewind exited with {ran.returncode}: {' | '.join(said[-4:])}" if said else ran.message())
        self.point_at(upstream)
        return done(f"rewound from {upstream.name} in {time.monotonic() - started:.2f} s: {' | '.join(said)}")

    def _clean_shutdown(self, control: ControlData) -> Result:
        """Finish crash recovery of a target that was not shut down cleanly, keeping its WAL.

        pg_rewind would do it itself, in single-user mode with the data directory's own config; but the checkpoint
        that ends crash recovery removes WAL segments before it, and pg_rewind then cannot read back from the last
        common checkpoint ("could not find previous WAL record"). With archive_mode on and an archive command that
        never succeeds no segment counts as archived, so none is removed.

        A standby shut down cleanly before it replayed a checkpoint of its newest timeline (a crashed primary that
        was restarted as a standby, then stopped) needs the same: its control file still names the older timeline,
        pg_rewind takes that for the target's timeline and fails ("could not find previous WAL record")."""
        timeline_behind = control.min_recovery_timeline > control.checkpoint_timeline
        if control.state == "shut down" or (control.state == "shut down in recovery" and not timeline_behind):
            return done()
        data_dir = self.settings.data_dir
        for name in ("standby.signal", "recovery.signal"):  # single-user mode refuses standby mode
            (data_dir / name).unlink(missing_ok=True)
        argv = [
            self.runner.program("postgres"), "--single", "-F", "-D", str(data_dir),
            "-c", f"config_file={self.files.conf}",
            "-c", "archive_mode=on", "-c", "archive_command=false",
            "template1",
        ]  # fmt: skip
        ran = self.runner.run(argv, self.timeout_s)  # stdin is empty: it recovers, then exits
        if not ran.ok:
            return failed(f"crash recovery before pg_rewind failed: {ran.message()}")
        return done()

    def _checkpoint_after_promotion(self, upstream: Upstream) -> Result:
        """pg_rewind reads the source's timeline from its control file, which a promotion updates only at the next
        checkpoint: before it, pg_rewind finds both nodes on one timeline and says "no rewind required" about a
        diverged node. So a source whose last checkpoint precedes its current timeline is checkpointed first.

        A source still in recovery (a new leader that holds the key but has not finished its promotion) is waited
        for: rewound from a standby that promotes meanwhile, the target gets a minimum recovery point on the wrong
        timeline and then refuses to start ("requested timeline N does not contain minimum recovery point")."""
        s = self.settings
        try:
            conn = connect_remote(
                upstream.host, upstream.port, s.superuser.username, s.superuser.password, 10.0, self.timeout_s
            )
        except SqlError as error:
            return failed(f"cannot reach {upstream.name} to rewind from it: {error}")
        deadline = time.monotonic() + SOURCE_PROMOTION_WAIT_S
        try:
            with conn.cursor() as cur:
                while True:
                    cur.execute(SOURCE_TIMELINES_QUERY)
                    row = cur.fetchone()
                    current, checkpointed = row or (None, None)
                    if current is not None:
                        break
                    if time.monotonic() > deadline:
                        return failed(f"{upstream.name} is still in recovery: not a source to rewind from yet")
                    time.sleep(0.05)
                if checkpointed is not None and checkpointed < current:
                    log.info("checkpoint on %s: its control file still says timeline %s", upstream.name, checkpointed)
                    cur.execute("CHECKPOINT")
        except psycopg2.Error as error:
            return failed(f"cannot checkpoint {upstream.name} before pg_rewind: {pg_message(error)}")
        finally:
            conn.close()
        return done()


SOURCE_PROMOTION_WAIT_S = 10.0  # a leader takes the key before it promotes; promotion itself takes ~0.1 s
SOURCE_TIMELINES_QUERY = """
SELECT CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT timeline_id FROM pg_control_checkpoint())
"""

SLOTS_QUERY = "SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary"


def ensure_slots(sql: Sql, own_name: str, members: Sequence[str]) -> Result:
    """Create a physical slot for each of `members`, drop the (permanent, inactive) physical slots of others. A slot
    still in use is kept until its walsender goes: dropping it would fail anyway, and the next loop retries."""
    wanted = {slot_name(member) for member in members if member != own_name}
    try:
        existing = dict(sql.rows(SLOTS_QUERY))
    except SqlError as error:
        return failed(f"cannot list replication slots: {error}")
    notes: list[str] = []
    errors: list[str] = []
    for name in sorted(wanted - set(existing)):
        try:
            sql.execute("SELECT pg_create_physical_replication_slot(%s)", (name,))
            notes.append(f"created {name}")
        except SqlError as error:
            if "already exists" not in str(error):  # created meanwhile: what we wanted
                errors.append(f"cannot create slot {name}: {error}")
    for name in sorted(set(existing) - wanted):
        if existing[name]:
            notes.append(f"kept {name} while it is in use")
            continue
        try:
            sql.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            notes.append(f"dropped {name}")
        except SqlError as error:
            if "does not exist" not in str(error):
                errors.append(f"cannot drop slot {name}: {error}")
    if errors:
        return failed("; ".join(errors + notes))
    return done("; ".join(notes) or "slots already as wanted")
