"""The actions a decision asks for, as data. The adapters carry them out; the core never does.

The driver runs a decision's actions in order and stops at the first that fails; the next observation reports
each action's fate in `AgentState.last_outcome` (by class name), and the next decision repairs what is left.
How a driver runs them (preconditions checked right before each, outcomes into the node's memory) is `fsm.node`.
So every action is idempotent: repeating one that already took effect changes nothing. Each docstring states
what the action does, what makes it succeed, and its ordering contract.

`plan(facts, **fixed)` fills an action's fields from the facts of the observation; `fixed` are the arguments a
row of the rule table gives (a demotion mode, a callback name).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from fsm.observation import SyncState, TimelineSwitch
from fsm.states import State
from fsm.topology import slot_holders

if TYPE_CHECKING:
    from fsm.facts import Facts

ACTION_TYPES: dict[str, type[Action]] = {}


class LeaseEffect(StrEnum):
    """What an action's success does to the node's lease (`fsm.node.advance`)."""

    NONE = "none"
    RENEWS = "renews"  # the request's start time becomes the lease renewal
    FAILSAFE = "failsafe"  # likewise, the lease held by the failsafe members' word instead of the key
    ENDS = "ends"  # the node holds no lease any more


@dataclass(frozen=True)
class Action:
    """Base of all actions. Subclasses register themselves in ACTION_TYPES under their class name.

    The class attributes are the action's contract with the driver, as data (`fsm.node`): which adapter carries
    it out, whether it changes how Postgres runs (the next turn then comes at once), whether the next turn acts on
    its success (it then comes at once too), whether it may run only while the lease is valid at the moment it
    runs, and what its success does to the lease."""

    # Which adapter carries the action out: "dcs", "postgres", "watchdog", "callback", "peers" (the other members'
    # REST APIs), or "api" (the REST API reads it off the turn: an answer to an operator request).
    adapter: ClassVar[str] = ""
    changes_postgres: ClassVar[bool] = False
    acted_on_next: ClassVar[bool] = False
    needs_valid_lease: ClassVar[bool] = False
    lease_effect: ClassVar[LeaseEffect] = LeaseEffect.NONE

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ACTION_TYPES[cls.__name__] = cls

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(**fixed)


class DemoteMode(StrEnum):
    """How a primary stops taking writes."""

    GRACEFUL = "graceful"  # checkpoint, then a fast shutdown: replicas get all WAL, no rewind needed to rejoin
    IMMEDIATE = "immediate"  # immediate shutdown: the fastest fence, when the lease is already in doubt
    READ_ONLY = "read-only"  # restart as a standby of nobody: reads go on while the DCS is unreachable


class StopMode(StrEnum):
    SMART = "smart"
    FAST = "fast"
    IMMEDIATE = "immediate"


# --- bootstrap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaceForInitialize(Action):
    """Create the `initialize` key with an empty value if it is absent (create-if-absent).

    Succeeds only for the one node whose create won; that node alone runs InitDb, on its next turn, which comes at
    once (the win is a fact of that turn, `won_initialize_race`)."""

    adapter: ClassVar[str] = "dcs"
    acted_on_next: ClassVar[bool] = True


@dataclass(frozen=True)
class InitDb(Action):
    """Run initdb with the configured options, write the node's own settings, create the bootstrap roles.

    A no-op on a data directory that is already valid. Runs only after RaceForInitialize succeeded."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True


@dataclass(frozen=True)
class CancelInitialize(Action):
    """Delete the `initialize` key if it still holds no system identifier (compare-and-delete on "").

    Lets another node bootstrap after this node's initdb failed; never touches an initialized cluster."""

    adapter: ClassVar[str] = "dcs"


@dataclass(frozen=True)
class SetInitializeKey(Action):
    """Write the leader's system identifier into the unset `initialize` key (compare-and-swap on "").

    Only the leader does it, and only after it holds the leader key and runs writable."""

    adapter: ClassVar[str] = "dcs"
    system_identifier: str

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(system_identifier=facts.observation.postgres.system_identifier or "")


@dataclass(frozen=True)
class CloneReplica(Action):
    """Fill an empty data directory from `source`, trying `methods` in order (basebackup, or scripts).

    A non-empty unusable directory is moved aside first, never deleted. Runs before StartStandby."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    source: str
    methods: tuple[str, ...]

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(source=facts.clone_source or "", methods=facts.observation.agent.create_replica_methods)


@dataclass(frozen=True)
class Reclone(CloneReplica):
    """Move a diverged data directory aside (never delete it), then clone from `source` like CloneReplica.

    Chosen only when pg_rewind is impossible or failed; Postgres must already accept no writes."""


# --- Postgres lifecycle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StartPrimary(Action):
    """Start a stopped Postgres so that it can take writes: a data directory last shut down as a primary comes
    up as one; one last run as a standby comes up as a standby, for Promote to give it a new timeline. A no-op
    when Postgres runs. Only a node holding the leader key with a valid lease asks for it, and the driver skips
    it (reporting it failed) if that lease has run out by the time it would run."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    needs_valid_lease: ClassVar[bool] = True


@dataclass(frozen=True)
class StartStandby(Action):
    """Make Postgres run as a standby streaming from `upstream`: the leader, or the replica this member's
    replicatefrom tag names (None: a standby of nobody, read-only, or replaying the archive with nostream).

    Starts it if stopped, writes standby.signal, primary_conninfo and primary_slot_name; a running standby is
    re-pointed like FollowLeader. Never leaves a writable primary running: a writable one is stopped first."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    upstream: str | None

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(upstream=facts.upstream if facts.upstream != facts.observation.name else None)


@dataclass(frozen=True)
class FollowLeader(Action):
    """Re-point a running standby at `upstream` (as StartStandby names it) with a reload."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    upstream: str | None

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(upstream=facts.upstream)


@dataclass(frozen=True)
class StopPostgres(Action):
    """Stop Postgres with `mode`; a no-op when it is not running."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    mode: StopMode = StopMode.FAST


@dataclass(frozen=True)
class Promote(Action):
    """Make the running Postgres writable: promote a standby (a new timeline) or lift a read-only fence. A no-op
    on a writable primary; fails when Postgres is not running (it never starts one: a delayed promote must not
    revive a server the watchdog killed).

    Ordering: only after the leader key is held with a valid lease and the watchdog is armed; the driver skips
    it (reporting it failed) if the lease has run out by the time it would run."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    needs_valid_lease: ClassVar[bool] = True


@dataclass(frozen=True)
class Demote(Action):
    """Stop local Postgres taking writes, by `mode`. A no-op when it already accepts none.

    Ordering: always before the leader key is released or abandoned, and before DisarmWatchdog."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    mode: DemoteMode


@dataclass(frozen=True)
class RestartPrimary(Action):
    """An operator's restart of the leader's Postgres: a fast stop, then a start as primary within `timeout_s`
    (None: the adapter's default). Ordering: after RenewLeaderKey in the same decision; like StartPrimary it runs
    only while the lease is valid (the driver re-checks it), and the watchdog stays armed throughout."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    needs_valid_lease: ClassVar[bool] = True
    timeout_s: float | None = None

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        request = facts.request  # made now, or scheduled and due
        return cls(timeout_s=request.timeout_s if request else None)


@dataclass(frozen=True)
class RestartStandby(RestartPrimary):
    """An operator's restart of a standby: a fast stop, then a start as the standby it was within `timeout_s`."""

    needs_valid_lease: ClassVar[bool] = False


@dataclass(frozen=True)
class RewindFromLeader(Action):
    """pg_rewind the stopped data directory from `leader`, then restore this node's own settings.

    Runs before StartStandby; its failure is reported so the next decision re-clones instead."""

    adapter: ClassVar[str] = "postgres"
    changes_postgres: ClassVar[bool] = True
    leader: str

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(leader=facts.leader or "")


@dataclass(frozen=True)
class EnsureReplicationSlots(Action):
    """Create a physical slot for each member in `members` (those that stream from this one: on the primary, all
    but cascading and nostream members) and drop slots of former ones."""

    adapter: ClassVar[str] = "postgres"
    members: tuple[str, ...]

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        obs = facts.observation
        return cls(members=slot_holders(obs.name, obs.dcs, facts.leader))


@dataclass(frozen=True)
class ApplyClusterParameters(Action):
    """Give Postgres the cluster-wide `parameters` and `pg_hba` lines (the DCS config key's postgresql section; this
    member's own file wins where both set one) and whether a standby streams through its slot (`use_slots`), and
    reload; a setting that needs a restart shows as pending_restart until one."""

    adapter: ClassVar[str] = "postgres"
    parameters: tuple[tuple[str, str | int | float | bool], ...]
    pg_hba: tuple[str, ...] = ()
    use_slots: bool = True

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        config = facts.observation.config
        return cls(parameters=config.parameters, pg_hba=config.pg_hba, use_slots=config.use_slots)


# --- the leader key and the DCS -------------------------------------------------------------------


@dataclass(frozen=True)
class AcquireLeaderKey(Action):
    """Create the leader key naming this node with the TTL (create-if-absent); if it already names this node,
    refresh it by compare-and-swap. Records the request's start time as the lease renewal.

    Ordering: before Promote, in an earlier decision (a node promotes only once it observes the key)."""

    adapter: ClassVar[str] = "dcs"
    lease_effect: ClassVar[LeaseEffect] = LeaseEffect.RENEWS


@dataclass(frozen=True)
class RenewLeaderKey(Action):
    """Compare-and-swap the leader key on this node's name, always refreshing the TTL; fails if another holds it.

    Records the request's start time as the lease renewal. Runs first in every leader decision."""

    adapter: ClassVar[str] = "dcs"
    lease_effect: ClassVar[LeaseEffect] = LeaseEffect.RENEWS


@dataclass(frozen=True)
class ReleaseLeaderKey(Action):
    """Delete the leader key if it names this node (compare-and-delete); a no-op otherwise.

    Ordering: only after Demote succeeded, so writes stop before anyone else can take the key."""

    adapter: ClassVar[str] = "dcs"
    lease_effect: ClassVar[LeaseEffect] = LeaseEffect.ENDS


@dataclass(frozen=True)
class PublishFailsafe(Action):
    """Write the `failsafe` key, Patroni's `{name: api_url}` of every member the view shows with a REST API: whom
    this leader must reach to keep leading through a DCS outage, and who alone may race for the key then.

    Only the leader writes it, after renewing, in failsafe mode, when the key differs from the view."""

    adapter: ClassVar[str] = "dcs"
    members: tuple[tuple[str, str], ...]

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(members=facts.failsafe_members)


@dataclass(frozen=True)
class ConfirmFailsafe(Action):
    """`POST /failsafe` to every other member of the failsafe key as last read, at once, each within
    `fsm.node.failsafe_timeout_s`; succeeds only if every one answers `Accepted` (a member that does takes no part
    in a leader race for ttl). Its success extends the lease from the request's start, as a renewal would: ttl,
    the time each member's word lasts, less the safety margin. Run by a leader the DCS does not answer."""

    adapter: ClassVar[str] = "peers"
    needs_valid_lease: ClassVar[bool] = True  # it extends a lease, never revives one that ran out
    lease_effect: ClassVar[LeaseEffect] = LeaseEffect.FAILSAFE
    members: tuple[tuple[str, str], ...]

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        me = facts.observation.name
        return cls(members=tuple(m for m in facts.observation.agent.failsafe_view or () if m[0] != me))


def _sync_key(facts: Facts) -> SyncState | None:
    view = facts.observation.dcs
    return view.sync if view else None


@dataclass(frozen=True)
class SetSyncStandby(Action):
    """Make `name` the synchronous standby (None: nobody). The key never names a standby that may miss an
    acknowledged commit, so the order is fixed:
    - to remove one: write the `sync` key {me, nobody} first, then clear synchronous_standby_names;
    - to add one: if the key names another standby or another leader (`clear_first`), write {me, nobody} first;
      then point synchronous_standby_names at `name`, wait until pg_stat_replication reports it sync, and only
      then write the key {me, name}. A standby that does not become sync in time fails the action but stays
      named in the setting, so commits wait for it."""

    adapter: ClassVar[str] = "dcs"
    name: str | None
    clear_first: bool = False

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        name, key, me = facts.best_sync_standby, _sync_key(facts), facts.observation.name
        keeps_key = key is not None and key.leader == me and key.sync_standby in (None, name)
        return cls(name=name, clear_first=name is not None and not keeps_key)


@dataclass(frozen=True)
class PrepareSyncStandby(Action):
    """In synchronous mode, before Postgres takes writes (StartPrimary, Promote): make synchronous_standby_names
    agree with the `sync` key, so that not one commit is acknowledged that the key's standby lacks.

    `name` is the standby the key names under this node (it held every commit when this node last wrote): the
    setting names it again, and commits wait for it. Otherwise (`name` None: the key names another leader,
    nobody, or is absent) write the key {me, nobody} first, so that no standby may be promoted over this node,
    then clear the setting. Works on a stopped or standby server (the setting takes effect when it runs as a
    primary). Ordering: after the leader key is held with a valid lease, before StartPrimary and Promote."""

    adapter: ClassVar[str] = "dcs"
    name: str | None

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        key, me = _sync_key(facts), facts.observation.name
        return cls(name=key.sync_standby if key is not None and key.leader == me else None)


@dataclass(frozen=True)
class PublishMember(Action):
    """Write this node's `members/<name>` key with its TTL: conn_url, api_url, role, state, WAL position,
    timeline, tags, and `pause` while the cluster is paused (`patronictl pause --wait` waits for every member to
    say so). Appended to every decision taken while the DCS answers; it is a heartbeat, not a rule."""

    adapter: ClassVar[str] = "dcs"
    state: State
    role: str
    paused: bool = False


@dataclass(frozen=True)
class PublishLeaderOptime(Action):
    """Write the leader's WAL position to the `status` key (optime), which bounds failover lag."""

    adapter: ClassVar[str] = "dcs"
    wal_position: int

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(wal_position=facts.observation.postgres.wal_position)


@dataclass(frozen=True)
class PublishHistory(Action):
    """Write the leader's timeline history to the `history` key so that followers can detect divergence. Lines the
    key has keep their new leader and time; the newest line it lacks names this leader (the adapter stamps the time
    of writing), older ones it lacks name nobody."""

    adapter: ClassVar[str] = "dcs"
    history: tuple[TimelineSwitch, ...]

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        obs = facts.observation
        stored = {(s.timeline, s.switch_lsn): s for s in (obs.dcs.history if obs.dcs else ())}
        local = obs.postgres.timeline_history

        def line(at: int, switch: TimelineSwitch) -> TimelineSwitch:
            kept = stored.get((switch.timeline, switch.switch_lsn))
            return kept or replace(switch, new_leader=obs.name if at == len(local) - 1 else None)

        return cls(history=tuple(line(at, switch) for at, switch in enumerate(local)))


@dataclass(frozen=True)
class ClearSwitchoverRequest(Action):
    """Delete the `failover` key: the switchover it asked for is done, stale, or cannot be honoured."""

    adapter: ClassVar[str] = "dcs"


@dataclass(frozen=True)
class RefuseRequest(Action):
    """Answer an operator request this node cannot honour with `reason` (the REST API reads it off the turn);
    nothing else changes."""

    adapter: ClassVar[str] = "api"
    reason: str

    @classmethod
    def plan(cls, facts: Facts, **fixed: Any) -> Action:
        return cls(reason=facts.notes["request_refused"])


# --- watchdog and callbacks -----------------------------------------------------------------------


@dataclass(frozen=True)
class ArmWatchdog(Action):
    """Arm the watchdog with this node's lease deadline (last renewal start + ttl - safety_margin): if the agent
    has not pushed it further by then, the watchdog kills the postmaster, so a frozen agent cannot outlive its lease.

    Ordering: before Promote. Fails if a required watchdog cannot be armed, and then Promote does not run."""

    adapter: ClassVar[str] = "watchdog"


@dataclass(frozen=True)
class PingWatchdog(Action):
    """Push the watchdog's deadline to the lease deadline of the renewal that just succeeded (arming it first if
    it is not armed). Ordering: after RenewLeaderKey, so a leader that cannot renew stops feeding the watchdog."""

    adapter: ClassVar[str] = "watchdog"


@dataclass(frozen=True)
class DisarmWatchdog(Action):
    """Disarm the watchdog. Ordering: only after Demote succeeded (or in maintenance mode)."""

    adapter: ClassVar[str] = "watchdog"


@dataclass(frozen=True)
class RunCallback(Action):
    """Run the configured callback script for `event` (on_role_change, on_stop, ...) with the new `role`.

    Runs after the change it reports; its failure is logged and never blocks the HA cycle."""

    adapter: ClassVar[str] = "callback"
    event: str
    role: str
