"""The facts about the local Postgres that a decision needs (`fsm.observation.PostgresState`), computed once a loop.

A running server (a live postmaster in postmaster.pid) is asked over SQL; a stopped one is read with pg_controldata
(positions from the last checkpoint or the minimum recovery point, since a stopped server has no "current" WAL).
The timeline history comes from this node's own `pg_wal/<TL>.history` file.

Semantics kept consistent with `fsm.observation`:
- `in_recovery` only while running; a standby of nobody (a read-only demotion) is in recovery, following nobody;
- `read_only` is a running primary with default_transaction_read_only on;
- `following` is the member our own config points the standby at, unless its WAL receiver streams from elsewhere
  (a re-point that has not taken effect yet);
- a postmaster that is alive but refuses connections (starting up, shutting down) counts as running and not
  writable;
- `synchronous_standby_names` is the running server's effective setting (what a new session shows), parsed, on a
  standby too; `sync_replicas` (pg_stat_replication rows in sync or quorum state) only on a primary; both are empty
  for a stopped or unreachable server.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fsm.observation import DataDir, PostgresState, TimelineSwitch

from .files import OwnFiles
from .process import PostmasterControl
from .runas import Runner
from .settings import PostgresSettings
from .sql import Sql, SqlError
from .standby_floors import FLOORS, Floors, parse_floors, short
from .values import ClusterSettings

log = logging.getLogger(__name__)

CONTROLDATA_TIMEOUT_S = 10.0

FACTS_QUERY = """
SELECT pg_is_in_recovery(),
       current_setting('default_transaction_read_only') = 'on',
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END,
       (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT sender_host FROM pg_stat_wal_receiver),
       (SELECT sender_port FROM pg_stat_wal_receiver),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT system_identifier FROM pg_control_system())::text,
       current_setting('data_checksums') = 'on' OR current_setting('wal_log_hints') = 'on',
       ARRAY(SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'),
       current_setting('synchronous_standby_names'),
       ARRAY(SELECT application_name FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')),
       EXISTS (SELECT FROM pg_settings WHERE pending_restart),
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END,
       ARRAY(SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT temporary)
"""
RUNNING_FLOORS_QUERY = "SELECT name, setting::int FROM pg_settings WHERE name = ANY(%s)"


_IDENT_START = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_IDENT_CONT = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]*")


def _standby_tokens(text: str) -> list[tuple[str, str]]:
    """synchronous_standby_names as Postgres's syncrep scanner sees it: (kind, text) with kind "name" (an
    identifier or "*"), "quoted" (a double-quoted name, its "" unescaped: never a keyword), "num", or one of "(",
    ")", ",". Raises ValueError on a character the scanner rejects."""
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        char = text[at]
        if char in " \t\n\r\f\v":
            at += 1
        elif char in "(),":
            tokens.append((char, char))
            at += 1
        elif char == "*":
            tokens.append(("name", "*"))
            at += 1
        elif char == '"':
            name, at = [], at + 1
            while True:
                end = text.find('"', at)
                if end < 0:
                    raise ValueError(f"unterminated quoted name in {text!r}")
                name.append(text[at:end])
                if text.startswith('""', end):
                    name.append('"')
                    at = end + 2
                else:
                    at = end + 1
                    break
            tokens.append(("quoted", "".join(name)))
        elif char.isascii() and char.isdigit():
            end = at
            while end < len(text) and text[end].isascii() and text[end].isdigit():
                end += 1
            tokens.append(("num", text[at:end]))
            at = end
        elif _IDENT_START.match(char):
            match = _IDENT_CONT.match(text, at + 1)
            end = match.end() if match else at + 1
            tokens.append(("name", text[at:end]))
            at = end
        else:
            raise ValueError(f"unexpected {char!r} in {text!r}")
    return tokens


def parse_standby_names(text: str) -> frozenset[str]:
    """The standby names of a synchronous_standby_names value, in any of Postgres's forms: a plain list
    (`a, b`), `FIRST n (a, b)`, `ANY n (a, b)` or `n (a, b)`; names bare (kept as written: Postgres matches them
    to application_name case-insensitively) or double-quoted (`"a""b"` is `a"b`); `*` (any standby) kept as "*".
    The empty value names nobody. Raises ValueError on text Postgres would not accept (a blank one included)."""
    if text == "":
        return frozenset()
    tokens = _standby_tokens(text)
    if not tokens:
        raise ValueError(f"no standby name in {text!r}")
    kinds = [kind for kind, _ in tokens]
    keyword = kinds[0] == "name" and tokens[0][1].lower() in ("first", "any")
    count = 1 if keyword else 0  # where `n` of `FIRST n (...)`, `ANY n (...)` or `n (...)` would be
    body = tokens
    if kinds[count : count + 2] == ["num", "("]:
        if kinds[-1] != ")":
            raise ValueError(f"no closing parenthesis in {text!r}")
        if int(tokens[count][1]) < 1:
            raise ValueError(f"the number of synchronous standbys must be at least 1 in {text!r}")
        body = tokens[count + 2 : -1]
    names = []
    for index, (kind, value) in enumerate(body):
        expected_name = index % 2 == 0
        if expected_name and kind in ("name", "quoted", "num"):
            if kind == "name" and value.lower() in ("first", "any"):
                raise ValueError(f"{value!r} is a keyword in {text!r}: quote it to name a standby")
            names.append(value)
        elif not expected_name and kind == ",":
            continue
        else:
            raise ValueError(f"unexpected {value!r} in {text!r}")
    if not names or len(body) % 2 == 0:
        raise ValueError(f"a standby name is missing in {text!r}")
    return frozenset(names)


def _standby_names(text: str | None) -> frozenset[str]:
    """parse_standby_names for what a running server reports; text it cannot parse (this parser's gap, since the
    server accepted it) is kept whole, so that it never looks like the setting the sync key asks for."""
    try:
        return parse_standby_names(text or "")
    except ValueError as error:
        log.warning("synchronous_standby_names not understood, kept as written: %s", error)
        return frozenset({text or ""})


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> the byte position as an integer."""
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class ControlData:
    """What pg_controldata says about a data directory."""

    system_identifier: str
    state: str  # "shut down", "shut down in recovery", "in production", "in archive recovery", ...
    checkpoint_lsn: int
    checkpoint_timeline: int
    min_recovery_lsn: int
    min_recovery_timeline: int
    can_rewind: bool  # data checksums or wal_log_hints
    floors: Floors = ()  # the values a hot standby needs at least (its primary's: standby_floors)

    @classmethod
    def parse(cls, text: str) -> ControlData:
        """Raises ValueError (KeyError included) on output that is not pg_controldata's."""
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        return cls(
            system_identifier=fields["Database system identifier"],
            state=fields["Database cluster state"],
            checkpoint_lsn=parse_lsn(fields["Latest checkpoint location"]),
            checkpoint_timeline=int(fields["Latest checkpoint's TimeLineID"]),
            min_recovery_lsn=parse_lsn(fields["Minimum recovery ending location"]),
            min_recovery_timeline=int(fields["Min recovery ending loc's timeline"]),
            can_rewind=fields["Data page checksum version"] != "0" or fields["wal_log_hints setting"] == "on",
            floors=parse_floors(fields),
        )


def read_controldata(runner: Runner, data_dir: Path) -> ControlData | str:
    """The control data, or why it could not be read (pg_controldata's own words)."""
    ran = runner.run([runner.program("pg_controldata"), "-D", str(data_dir)], CONTROLDATA_TIMEOUT_S)
    if not ran.ok:
        return ran.message()
    if "WARNING" in ran.stderr or "WARNING" in ran.stdout:  # a CRC mismatch or another version's control file
        return ran.message()
    try:
        return ControlData.parse(ran.stdout)
    except (ValueError, KeyError) as error:
        return f"pg_controldata output not understood ({error})"


def dir_empty(path: Path) -> bool:
    try:
        return not any(path.iterdir())
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False  # a file where the directory should be: in the way, so moved aside like any unusable one


def classify(runner: Runner, data_dir: Path) -> tuple[DataDir, ControlData | str | None]:
    """EMPTY (absent or empty), VALID (PG_VERSION present and pg_controldata reads it) or BROKEN, with the control
    data (or the reason it is broken)."""
    if dir_empty(data_dir):
        return DataDir.EMPTY, None
    if not (data_dir / "PG_VERSION").is_file():
        return DataDir.BROKEN, "no PG_VERSION file"
    control = read_controldata(runner, data_dir)
    return (DataDir.VALID if isinstance(control, ControlData) else DataDir.BROKEN), control


def read_history(data_dir: Path, timeline: int) -> tuple[TimelineSwitch, ...]:
    """The switches that led to `timeline`, from `pg_wal/<timeline>.history` (or the newest history file up to that
    timeline when that one is missing). Timeline 1 has none."""
    wal = data_dir / "pg_wal"
    candidates = []
    try:
        for entry in wal.iterdir():
            match = re.fullmatch(r"([0-9A-F]{8})\.history", entry.name)
            if match and int(match.group(1), 16) <= timeline:
                candidates.append((int(match.group(1), 16), entry))
    except OSError:
        return ()
    if not candidates:
        return ()
    _, path = max(candidates)
    switches = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) < 2 or parts[0].startswith("#"):
            continue
        try:
            switches.append(TimelineSwitch(int(parts[0]), parse_lsn(parts[1]), parts[2] if len(parts) > 2 else ""))
        except ValueError:
            log.warning("unreadable line in %s: %r", path, line)
    return tuple(switches)


def observe(runner: Runner, files: OwnFiles, control: PostmasterControl, sql: Sql) -> PostgresState:
    """The local Postgres's facts; never raises for a server that is down, starting or unreachable."""
    data_dir = files.settings.data_dir
    postmaster = control.current()
    if postmaster is None:
        return _stopped(runner, data_dir)
    try:
        row = sql.one(FACTS_QUERY)
    except SqlError as error:
        log.debug("postmaster %s runs but answers no query: %s", postmaster.pid, error)
        return _unreachable(runner, data_dir, files, postmaster.status)
    (in_recovery, read_only, written, received, replayed, wal_timeline, checkpoint_tl, min_recovery_tl, received_tl,
     sender_host, sender_port, receiver_status, system_identifier, can_rewind, streaming, standby_names, in_sync,
     pending_restart, replay_paused, slots) = row  # fmt: skip
    if in_recovery:
        timeline = max(checkpoint_tl or 1, min_recovery_tl or 0, received_tl or 0)
        try:
            # Without a connected WAL receiver the control file's timelines lag behind the one replayed (a standby
            # that followed a failover still says timeline 1 until its next restartpoint): ask the server itself.
            timeline = max(timeline, sql.replay_timeline())
        except SqlError as error:
            log.debug("IDENTIFY_SYSTEM failed, the standby's timeline may lag: %s", error)
    else:
        timeline = wal_timeline or checkpoint_tl or 1
    following = None
    state = files.read_state()
    upstream = state.upstream
    if in_recovery and upstream is not None:
        streams_elsewhere = sender_host is not None and (sender_host, sender_port) != (upstream.host, upstream.port)
        following = None if streams_elsewhere else upstream.name
    cluster = files.read_cluster_settings() or ClusterSettings()
    return PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=system_identifier,
        running=True,
        in_recovery=bool(in_recovery),
        read_only=bool(read_only) and not in_recovery,
        timeline=timeline,
        wal_written=int(written or 0),
        wal_received=int(received or 0) if in_recovery else 0,  # a promoted node still reports its last receipt
        wal_replayed=int(replayed or 0) if in_recovery else 0,
        following=following,
        streaming_replicas=frozenset(streaming or ()),
        synchronous_standby_names=_standby_names(standby_names),
        sync_replicas=frozenset() if in_recovery else frozenset(in_sync or ()),
        timeline_history=read_history(data_dir, timeline),
        can_rewind=bool(can_rewind),
        pending_restart=bool(pending_restart or state.raised)
        or bool(in_recovery and replay_paused and _below_primary(runner, data_dir, sql)),
        cluster_parameters=cluster.parameters,
        cluster_pg_hba=cluster.pg_hba,
        cluster_use_slots=cluster.use_slots,
        replication_slots=frozenset(slots or ()),
        replication_state=_replication_state(bool(in_recovery), receiver_status, files.settings),
    )


def _replication_state(in_recovery: bool, receiver_status: str | None, settings: PostgresSettings) -> str | None:
    """Patroni's names: a standby whose WAL receiver streams, or one that can replay the archive meanwhile."""
    if not in_recovery:
        return None
    if receiver_status == "streaming":
        return "streaming"
    restores = any(name == "restore_command" and value for name, value in settings.recovery_conf)
    return "in archive recovery" if restores else None


def _below_primary(runner: Runner, data_dir: Path, sql: Sql) -> bool:
    """A paused standby whose settings are below its primary's: its replay waits for a restart."""
    control = read_controldata(runner, data_dir)
    if not isinstance(control, ControlData):
        return False
    try:
        running = dict(sql.rows(RUNNING_FLOORS_QUERY, [list(FLOORS)]))
    except SqlError:
        return False
    below = short(control.floors, running)
    if below:
        log.warning("replay waits for a restart: %s (the primary's values, from pg_controldata)", ", ".join(below))
    return bool(below)


def _stopped(runner: Runner, data_dir: Path) -> PostgresState:
    kind, control = classify(runner, data_dir)
    if not isinstance(control, ControlData):
        return PostgresState(data_dir=kind)
    timeline = max(control.checkpoint_timeline, control.min_recovery_timeline)
    return PostgresState(
        data_dir=kind,
        system_identifier=control.system_identifier,
        timeline=timeline,
        wal_written=max(control.checkpoint_lsn, control.min_recovery_lsn),
        timeline_history=read_history(data_dir, timeline),
        can_rewind=control.can_rewind,
    )


def _unreachable(runner: Runner, data_dir: Path, files: OwnFiles, status: str) -> PostgresState:
    """A live postmaster that answers no query: running, and not writable while it starts or stops."""
    stopped = _stopped(runner, data_dir)
    recovering = status == "starting" or (data_dir / "standby.signal").exists()
    upstream = files.read_state().upstream
    return PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=stopped.system_identifier,
        running=True,
        in_recovery=recovering,
        read_only=not recovering and status != "ready",
        timeline=stopped.timeline,
        wal_written=0 if recovering else stopped.wal_written,
        wal_replayed=stopped.wal_written if recovering else 0,
        following=upstream.name if recovering and upstream else None,
        timeline_history=stopped.timeline_history,
        can_rewind=stopped.can_rewind,
    )
