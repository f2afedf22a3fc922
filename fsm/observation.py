"""What one decision may know: an immutable snapshot of the DCS, the local Postgres and the agent.

The driver (the real agent or the simulator) builds an `Observation` each loop and hands it to `decide()`.
Everything is a frozen dataclass, so a decision can never change what it was given. Impossible values
(a negative TTL, a negative WAL position, an unknown action name, two members of one name) raise
`InvalidObservation` when the observation is built, before any decision is taken.

Units end names: `_s` seconds on the driver's monotonic clock, `_bytes` sizes. WAL positions are byte
offsets (an LSN as an integer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class InvalidObservation(ValueError):
    """An observation that cannot happen; no decision is taken on it."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidObservation(message)


def _non_negative(value: float, name: str) -> None:
    _require(isinstance(value, (int, float)) and not math.isnan(value), f"{name} must be a number, got {value!r}")
    _require(value >= 0, f"{name} must not be negative, got {value!r}")


class Trigger(StrEnum):
    """Why the driver asks for a decision: its periodic loop (or a watch wake-up), or an agent shutdown."""

    TICK = "tick"
    SHUTDOWN = "shutdown"


class DataDir(StrEnum):
    """The local data directory as the Postgres adapter found it."""

    EMPTY = "empty"  # absent or empty: nothing to lose
    VALID = "valid"  # a cluster Postgres can start (its system identifier is in PostgresState)
    BROKEN = "broken"  # present but unusable (no PG_VERSION, failed clone, ...): moved aside, never deleted


# --- the DCS part ---------------------------------------------------------------------------------


SLOT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def slot_name(member: str) -> str:
    """The physical slot a member streams through: its name lowercased, other characters than [a-z0-9_] as `_`,
    at most 63 characters (Postgres's limit), as Patroni names them."""
    return "".join(char if char in SLOT_CHARACTERS else "_" for char in member.lower())[:63]


@dataclass(frozen=True)
class Tags:
    """Member tags, as Patroni names them."""

    nofailover: bool = False
    nosync: bool = False
    failover_priority: int = 1  # 0 means never promote, like nofailover
    noloadbalance: bool = False  # `GET /replica` answers 503: keep read traffic away
    clonefrom: bool = False  # new replicas clone from this member rather than the leader, when it is healthy
    nostream: bool = False  # no streaming: this standby replays WAL from the archive (restore_command) only
    replicatefrom: str | None = None  # cascading: stream from this member, while it runs as a replica

    def __post_init__(self) -> None:
        _require(self.failover_priority >= 0, f"failover_priority must not be negative, got {self.failover_priority}")
        _require(self.replicatefrom != "", "replicatefrom must name a member")

    @property
    def may_promote(self) -> bool:
        return not self.nofailover and self.failover_priority > 0


@dataclass(frozen=True)
class Member:
    """One `members/<name>` key: what that member last published (the key expires with `ttl`)."""

    name: str
    role: str = "replica"  # "primary" or "replica", as Patroni writes it
    state: str = "running"  # Patroni's member state: running, starting, stopped, crashed, ...
    wal_position: int = 0  # xlog_location
    timeline: int = 1
    tags: Tags = field(default_factory=Tags)
    api_url: str = ""
    conn_url: str = ""
    replication_state: str | None = None  # a standby's: "streaming", "in archive recovery" (shown, not decided on)
    pending_restart: bool = False  # shown by regentctl list, not decided on

    def __post_init__(self) -> None:
        _require(bool(self.name), "a member needs a name")
        _non_negative(self.wal_position, f"member {self.name} wal_position")
        _require(self.timeline >= 1, f"member {self.name} timeline must be >= 1, got {self.timeline}")

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class LeaderKey:
    """The `leader` key: who holds the lease, and the version a compare-and-swap must match."""

    holder: str
    version: int = 0

    def __post_init__(self) -> None:
        _require(bool(self.holder), "the leader key must name its holder")
        _non_negative(self.version, "leader key version")


@dataclass(frozen=True)
class FailoverRequest:
    """The `failover` key: a switchover (names the current leader) or a manual failover (names a candidate).

    A scheduled switchover also holds Patroni's `scheduled_at` text (kept as stored, for the REST API and the logs;
    the core never parses it) and `due_s`, that time on the observing driver's monotonic clock, which the driver
    converts (None: the text could not be read as a time with a zone). A scheduled request is due only once
    `due_s` has come: one the driver could not convert is never due."""

    leader: str | None = None
    candidate: str | None = None
    scheduled_at: str | None = None
    due_s: float | None = None

    def __post_init__(self) -> None:
        named = self.leader is not None or self.candidate is not None
        _require(named, "a failover request names a leader or a candidate")
        if self.due_s is not None:
            _require(isinstance(self.due_s, (int, float)) and math.isfinite(self.due_s), f"due_s: {self.due_s!r}")

    @property
    def scheduled(self) -> bool:
        return self.scheduled_at is not None or self.due_s is not None


@dataclass(frozen=True)
class SyncState:
    """The `sync` key: the only standby that may be promoted in synchronous mode (None: nobody was synchronous)."""

    leader: str | None = None
    sync_standby: str | None = None


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a timeline history: `timeline` ended at WAL position `switch_lsn` when the next one began. The DCS
    `history` key (Patroni's `[timeline, lsn, reason, timestamp, new_leader]`) also says who began the next timeline
    and when it was recorded; a local history file says neither (None)."""

    timeline: int
    switch_lsn: int
    reason: str = ""
    new_leader: str | None = None
    at: str | None = None  # ISO 8601, as the DCS key stores it; None: not recorded yet

    def __post_init__(self) -> None:
        _require(self.timeline >= 1, f"history timeline must be >= 1, got {self.timeline}")
        _non_negative(self.switch_lsn, f"switch_lsn of timeline {self.timeline}")


FailsafeView = tuple[tuple[str, str], ...]  # the `failsafe` key: (member name, REST API URL), sorted by name


@dataclass(frozen=True)
class FailsafePing:
    """The last `POST /failsafe` this node accepted: a leader cut off from the DCS asked to keep leading, at `at_s`
    (the driver's monotonic clock). For ttl after it, this node takes no part in a leader race."""

    leader: str
    at_s: float

    def __post_init__(self) -> None:
        _require(bool(self.leader), "a failsafe ping names its leader")
        _non_negative(self.at_s, "failsafe ping at_s")


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster-wide settings (the DCS `config` key, or the last known copy while the DCS is unreachable).

    The leader's own lease deadline is `last renewal start + ttl_s - safety_margin_s`; `lease_timing_problems`
    in `fsm.lease` says which settings break the argument that makes that deadline safe.
    """

    ttl_s: float = 30.0
    loop_wait_s: float = 10.0
    retry_timeout_s: float = 10.0
    safety_margin_s: float = 2.0  # covers clock-rate drift and the time demotion takes
    maximum_lag_on_failover_bytes: int = 1_048_576
    primary_start_timeout_s: float = 30.0  # a crashed primary gets this long to restart before handing over
    synchronous_mode: bool = False
    use_slots: bool = True
    use_pg_rewind: bool = True  # a diverged member may pg_rewind; else it re-clones
    parameters: tuple[tuple[str, str | int | float | bool], ...] = ()  # postgresql.parameters of every member
    pg_hba: tuple[str, ...] = ()  # postgresql.pg_hba lines of every member (a member's own file's lines win)
    pause: bool = False
    failsafe_mode: bool = False  # with the DCS unreachable, lead on while every member of the failsafe key accepts

    def __post_init__(self) -> None:
        for name in ("ttl_s", "loop_wait_s", "retry_timeout_s", "safety_margin_s", "primary_start_timeout_s"):
            _non_negative(getattr(self, name), name)
        _require(self.ttl_s > 0, "ttl_s must be positive")
        _non_negative(self.maximum_lag_on_failover_bytes, "maximum_lag_on_failover_bytes")
        _require(all(isinstance(line, str) for line in self.pg_hba), "pg_hba lines must be strings")


@dataclass(frozen=True)
class ClusterView:
    """Everything read from the DCS in one call. `Observation.dcs is None` means the DCS was unreachable."""

    leader: LeaderKey | None = None
    members: tuple[Member, ...] = ()
    initialize: str | None = None  # None: nobody raced yet; "": claimed, initdb running; else the system id
    failover: FailoverRequest | None = None
    sync: SyncState | None = None
    leader_wal_position: int | None = None  # `status` optime: the last WAL position the leader published
    history: tuple[TimelineSwitch, ...] = ()
    failsafe: FailsafeView | None = None  # the `failsafe` key (None: absent, or not a mapping of names to URLs)
    # Not the DCS's: members whose REST API answered this turn that they run as a primary (`fsm.node.with_positions`)
    live_primaries: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        _require(len(names) == len(set(names)), f"duplicate member names: {sorted(names)}")
        if self.leader_wal_position is not None:
            _non_negative(self.leader_wal_position, "leader_wal_position")

    def member(self, name: str | None) -> Member | None:
        return next((m for m in self.members if m.name == name), None)


# --- operator requests -----------------------------------------------------------------------------


class RequestKind(StrEnum):
    RESTART = "restart"
    REINITIALIZE = "reinitialize"


@dataclass(frozen=True)
class OperatorRequest:
    """An operator's request to this node (the REST API's POST /restart or /reinitialize), for the next turn to
    act on or refuse; the turn's decision is the answer.

    restart: only if this node runs in `role` ("primary" or "replica", when given) and, with `restart_pending`,
    only if Postgres has settings waiting for a restart; `timeout_s` bounds Postgres's start. reinitialize: a fresh
    copy of a running replica tagged `clonefrom`, else of the leader; of the leader always with `from_leader`.

    A scheduled restart (Patroni's `schedule`) has `at_s`, its time on the driver's monotonic clock: the driver
    keeps it and hands it to every turn as `AgentState.scheduled` until a turn answers it; its conditions are
    judged when it is due, not when it was scheduled."""

    kind: RequestKind
    role: str | None = None
    restart_pending: bool = False
    timeout_s: float | None = None
    at_s: float | None = None
    from_leader: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.kind, RequestKind), f"unknown request {self.kind!r}")
        _require(self.role in (None, "primary", "replica"), f"role must be primary or replica, got {self.role!r}")
        if self.timeout_s is not None:
            _non_negative(self.timeout_s, "timeout_s")
        if self.at_s is not None:
            _non_negative(self.at_s, "at_s")
            _require(self.kind is RequestKind.RESTART, "only a restart can be scheduled")


# --- the local part -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresState:
    """The local Postgres as its adapter found it this loop."""

    data_dir: DataDir = DataDir.EMPTY
    system_identifier: str | None = None
    running: bool = False
    in_recovery: bool = False
    read_only: bool = False  # a primary fenced read-only (demoted, kept running)
    timeline: int = 1
    wal_written: int = 0  # pg_current_wal_lsn on a primary; the last WAL on disk when stopped
    wal_received: int = 0
    wal_replayed: int = 0
    following: str | None = None  # the member a standby streams from (its primary_conninfo)
    streaming_replicas: frozenset[str] = frozenset()  # pg_stat_replication on a primary
    # The running server's effective synchronous_standby_names ("*" stands for any standby; empty: commits wait
    # for nobody), and the standbys pg_stat_replication reports in sync (or quorum) state.
    synchronous_standby_names: frozenset[str] = frozenset()
    sync_replicas: frozenset[str] = frozenset()
    timeline_history: tuple[TimelineSwitch, ...] = ()  # this node's own history file
    can_rewind: bool = True  # data checksums or wal_log_hints are on
    pending_restart: bool = False  # a running server has settings that wait for a restart
    replication_state: str | None = None  # a standby's, as Patroni names it: "streaming", "in archive recovery"
    cluster_parameters: tuple[tuple[str, str | int | float | bool], ...] = ()  # the cluster-wide ones it was given
    cluster_pg_hba: tuple[str, ...] = ()  # the cluster-wide pg_hba lines it was given
    cluster_use_slots: bool = True  # whether it was told to stream through its slot, as a standby
    replication_slots: frozenset[str] = frozenset()  # the running server's permanent physical slots (`slot_name`)

    def __post_init__(self) -> None:
        for name in ("wal_written", "wal_received", "wal_replayed"):
            _non_negative(getattr(self, name), name)
        _require(self.timeline >= 1, f"timeline must be >= 1, got {self.timeline}")
        _require(self.running or not self.in_recovery, "a stopped Postgres cannot be in recovery")
        _require(self.data_dir is DataDir.VALID or not self.running, "Postgres cannot run without a valid data dir")

    @property
    def wal_position(self) -> int:
        """The furthest WAL this node has, whichever role it plays."""
        return max(self.wal_written, self.wal_received, self.wal_replayed)

    @property
    def writable(self) -> bool:
        return self.running and not self.in_recovery and not self.read_only


@dataclass(frozen=True)
class ActionOutcome:
    """What became of the previous loop's actions, by action type name (see `fsm.actions.ACTION_TYPES`)."""

    succeeded: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AgentState:
    """What the agent itself knows: its tags, its lease bookkeeping, and how its last actions went."""

    tags: Tags = field(default_factory=Tags)
    create_replica_methods: tuple[str, ...] = ("basebackup",)
    lease_renewed_at_s: float | None = None  # start of the last successful acquire or renew request
    lease_ttl_s: float | None = None  # the ttl that request wrote (None: the configured one)
    postgres_down_since_s: float | None = None  # first loop that saw Postgres not running, while it stays down
    last_outcome: ActionOutcome = field(default_factory=ActionOutcome)
    request: OperatorRequest | None = None  # an operator's request this turn answers
    scheduled: OperatorRequest | None = None  # a scheduled restart waiting for its time (`at_s`)
    failsafe_view: FailsafeView | None = None  # the `failsafe` key as last read: whom a leader asks in an outage
    failsafe_active: bool = False  # the lease was last extended by the failsafe members' word, not by the key
    failsafe_ping: FailsafePing | None = None  # the last POST /failsafe this node accepted

    def __post_init__(self) -> None:
        _require(self.request is None or self.request.at_s is None, "a scheduled request goes in `scheduled`")
        _require(self.scheduled is None or self.scheduled.at_s is not None, "`scheduled` needs its time, at_s")
        for name in ("lease_renewed_at_s", "lease_ttl_s", "postgres_down_since_s"):
            value = getattr(self, name)
            if value is not None:
                _non_negative(value, name)
        _require(bool(self.create_replica_methods), "create_replica_methods must name at least one method")


@dataclass(frozen=True)
class Observation:
    """One loop's facts. `now_s` is the driver's monotonic clock: the core never reads a clock itself."""

    name: str
    now_s: float
    config: ClusterConfig
    dcs: ClusterView | None  # None: the DCS could not be read within retry_timeout
    postgres: PostgresState
    agent: AgentState = field(default_factory=AgentState)
    trigger: Trigger = Trigger.TICK

    def __post_init__(self) -> None:
        _require(bool(self.name), "the observation must name this node")
        _non_negative(self.now_s, "now_s")
        _require(isinstance(self.trigger, Trigger), f"unknown trigger {self.trigger!r}")
        _require(isinstance(self.postgres.data_dir, DataDir), f"unknown data_dir {self.postgres.data_dir!r}")
        ping = self.agent.failsafe_ping
        for stamp in (self.agent.lease_renewed_at_s, self.agent.postgres_down_since_s, ping.at_s if ping else None):
            _require(stamp is None or stamp <= self.now_s, f"a recorded time {stamp} lies after now_s {self.now_s}")
