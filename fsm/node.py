"""The node core: what a Regent node remembers between two decisions, and when it takes its next turn.

`decide()` is one decision; a node is more. Between two decisions it remembers its state, when its last renew
started, since when Postgres is down, how the actions of its last turn went and how many turns it took in a row
without sleeping; and it follows a policy: which action may still run when its turn comes, what an action's
outcome does to the memory, whether the next turn comes at once, after loop_wait, or never. All of that is here,
pure, in the shape of etcd-io/raft's RawNode, so that the real agent (`runtime/agent.py`) and the simulator
(`model/world.py`) are two shells around one core and the explorer checks the production policy:

    peers_to_ask(name, memory, view, config)   -> whose WAL position to ask for before this turn's step
    with_positions(view, answers)              -> the view with the positions they gave
    failsafe_refusal(name, memory, ...)        -> why the REST API refuses a POST /failsafe, or None: accept it
    step(name, memory, readings, now)          -> Turn(observation, decision, memory')
    next_action(memory, decision)              -> the action to run now, or None when the turn's actions are over
    blocked(action, memory, config, now)       -> why it may not run now, or None
    lease_deadline(memory, config)             -> by when writes must stop (the ttl the last renewal wrote)
    advance(memory, action, ok, started_at)    -> memory'   (renew start times, releases, outcomes)
    keepalive(memory, decision)                -> the heartbeats to repeat while a long action runs
    end_turn(memory, before, decision, ...)    -> (memory', Wake)
    Turn.answered_scheduled                    -> the driver drops its scheduled restart

A driver's turn: read its ports into `Readings` (asking the `peers_to_ask` for their WAL positions first, then
`with_positions`); `step`; while `next_action` names one, check it with `blocked` right before it would run (skip
it as failed if it says why), run it, and `advance` with its outcome; while an action that `takes_long` runs,
every `keepalive_interval_s` run the `keepalive` heartbeats the same way (checked, then `advance_keepalive`); then
`end_turn`, and sleep as the `Wake` says (no later than `Wake.by_s`, a scheduled time). A driver that keeps a
scheduled restart hands it to every turn (`Readings.scheduled`) and drops it once `Turn.answered_scheduled`. Times
are the driver's monotonic clock, passed in: nothing here reads one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from fsm.actions import (
    ACTION_TYPES,
    Action,
    ArmWatchdog,
    LeaseEffect,
    PingWatchdog,
    PublishFailsafe,
    PublishMember,
    RenewLeaderKey,
)
from fsm.decision import Decision, decide
from fsm.facts import answered_request, derive_facts
from fsm.lease import lease_deadline_s
from fsm.observation import (
    ActionOutcome,
    AgentState,
    ClusterConfig,
    ClusterView,
    FailsafePing,
    FailsafeView,
    Member,
    Observation,
    OperatorRequest,
    PostgresState,
    Tags,
    Trigger,
)
from fsm.states import State
from fsm.transitions import RULES

RULES_BY_NAME = {row.name: row for row in RULES}
ANSWERING_FACTS = {"restart_requested", "request_refused"}  # a row guarded by one of these answers the request

MAX_IMMEDIATE = 5  # turns in a row without sleeping while things change; then loop_wait again

# Settings the DCS `config` key may change at run time (Patroni's dynamic configuration), by their YAML names.
DYNAMIC = {
    "ttl": "ttl_s",
    "loop_wait": "loop_wait_s",
    "retry_timeout": "retry_timeout_s",
    "maximum_lag_on_failover": "maximum_lag_on_failover_bytes",
    "synchronous_mode": "synchronous_mode",
    "pause": "pause",
    "postgresql.use_slots": "use_slots",
    "postgresql.use_pg_rewind": "use_pg_rewind",
    "postgresql.parameters": "parameters",  # a mapping, kept as sorted (name, value) pairs
    "postgresql.pg_hba": "pg_hba",  # a list, kept as a tuple
    "failsafe_mode": "failsafe_mode",
}


@dataclass(frozen=True)
class Memory:
    """What a node carries from one turn to the next. A fresh agent process starts from `Memory()`."""

    state: State = State.BOOTSTRAP
    lease_renewed_at_s: float | None = None  # start of the last successful acquire or renew request
    lease_ttl_s: float | None = None  # the ttl that request wrote: the key lives by it, whatever ttl says since
    turn_ttl_s: float | None = None  # the ttl of this turn's settings: what its writes to the DCS use
    postgres_down_since_s: float | None = None  # first turn that saw Postgres not running, while it stays down
    last_outcome: ActionOutcome = field(default_factory=ActionOutcome)  # the actions of the last turn, by name
    immediate_turns: int = 0  # turns taken in a row without sleeping
    actions_run: int = 0  # how many of the current decision's actions have run (or were skipped as failed)
    last_rule: str | None = None
    next_due_s: float | None = None  # the next scheduled time (restart, switchover) the last turn saw ahead
    failsafe_view: FailsafeView | None = None  # the `failsafe` key as last read or written
    failsafe_active: bool = False  # the lease was last extended by ConfirmFailsafe, not by the key


@dataclass(frozen=True)
class Readings:
    """What the driver read through its ports for one turn."""

    view: ClusterView | None  # None: the DCS could not be read within retry_timeout
    postgres: PostgresState
    config: ClusterConfig  # the effective settings (`effective_config`)
    tags: Tags = field(default_factory=Tags)
    create_replica_methods: tuple[str, ...] = ("basebackup",)
    shutting_down: bool = False
    request: OperatorRequest | None = None  # an operator's request for this turn to answer
    scheduled: OperatorRequest | None = None  # the scheduled restart the driver keeps until a turn answers it
    failsafe_ping: FailsafePing | None = None  # the last POST /failsafe the REST API accepted (`failsafe_refusal`)


@dataclass(frozen=True)
class Turn:
    """One turn's observation and decision, and the memory to run its actions from."""

    observation: Observation
    decision: Decision
    memory: Memory

    @property
    def answered_scheduled(self) -> bool:
        """This turn's decision acted on the scheduled restart, or refused it: the driver drops it now (Patroni
        too drops a scheduled restart once it has been tried, whatever came of it)."""
        obs = self.observation
        if obs.agent.scheduled is None or answered_request(obs) is not obs.agent.scheduled:
            return False
        return bool(ANSWERING_FACTS & set(RULES_BY_NAME[self.decision.rule].when))


class WakeKind(StrEnum):
    AT_ONCE = "at once"
    LOOP_WAIT = "after loop_wait"
    STOP = "stop"  # the final turn of a shutdown has run: the agent ends


@dataclass(frozen=True)
class Wake:
    """When the next turn comes. `watch`: while asleep, a change of the leader key ends the sleep early (every
    state but leader: a leader's own renewals would wake it every loop)."""

    kind: WakeKind
    watch: bool = False
    by_s: float | None = None  # after loop_wait, but no later than this (a scheduled restart's or switchover's time)


def dynamic_config(local: ClusterConfig, stored: Mapping[str, Any]) -> ClusterConfig:
    """`local` overridden by the DCS `config` key's values of the right kind (Patroni's dynamic configuration);
    raises ValueError (or TypeError) if the result is not a valid configuration."""
    changes: dict[str, Any] = {}
    for key, attribute in DYNAMIC.items():
        section, _, inner = key.rpartition(".")
        within = stored.get(section) if section else stored
        value = within.get(inner) if isinstance(within, Mapping) else None
        if isinstance(value, Mapping):
            value = tuple(sorted(value.items()))
        elif isinstance(value, list):
            value = tuple(value)
        if value is not None and _same_kind(value, getattr(local, attribute)):
            changes[attribute] = value
    return replace(local, **changes) if changes else local


def _same_kind(value: Any, current: Any) -> bool:
    """A flag for a flag, a number for a number (int or float), a collection for a collection."""
    if isinstance(value, bool) or isinstance(current, bool):
        return isinstance(value, bool) and isinstance(current, bool)
    if isinstance(current, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(current))


def effective_config(
    local: ClusterConfig, stored: Mapping[str, Any] | None, lease_ttl_s: float | None = None
) -> ClusterConfig:
    """The settings a turn runs with: `dynamic_config`, with ttl cut to the lease the store really grants (a
    ZooKeeper server clamps the session timeout), and loop_wait cut with it when the cut lease would end before the
    next turn (to half of what the lease leaves beyond safety_margin: a leader renews in time, and its fence never
    fires on a healthy agent). A stored config that makes an invalid one is ignored: the local settings stand (the
    driver logs it)."""
    try:
        config = dynamic_config(local, stored or {})
    except (TypeError, ValueError):
        config = local
    if lease_ttl_s is not None and lease_ttl_s < config.ttl_s:
        config = replace(config, ttl_s=lease_ttl_s)
        usable_s = lease_ttl_s - config.safety_margin_s
        if config.loop_wait_s >= usable_s:
            config = replace(config, loop_wait_s=max(usable_s / 2, 0.1))
    return config


def peers_to_ask(
    name: str, memory: Memory, view: ClusterView | None, config: ClusterConfig | None = None
) -> tuple[Member, ...]:
    """The members whose WAL position a follower asks for (their REST API) right before deciding, when nobody
    holds the leader key: who goes first is decided on positions, and members publish theirs only once a loop, so a
    less advanced replica could win on stale numbers and the more advanced one would then need a rewind (Patroni
    asks too); and whoever answers that it runs as a primary keeps everyone out of the race. In failsafe mode also
    the failsafe key's members whose member key lapsed: a leader cut off from the DCS leads on there. Nobody to ask
    otherwise."""
    if view is None or view.leader is not None or memory.state is not State.FOLLOWER:
        return ()
    asked = [member for member in view.members if member.name != name and member.api_url]
    if config is not None and config.failsafe_mode:
        known = {member.name for member in view.members} | {name}
        asked += [Member(other, api_url=url) for other, url in view.failsafe or () if other not in known and url]
    return tuple(asked)


def position_timeout_s(config: ClusterConfig) -> float:
    """How long to wait for a member's position: an election must not wait long on a member that is gone."""
    return min(1.0, config.retry_timeout_s / 4)


@dataclass(frozen=True)
class PeerAnswer:
    """What a member's REST API (`GET /patroni`) said when asked: its furthest WAL position, and whether it runs as
    a primary (then nobody races: Patroni's "Primary is still alive", say a leader leading on in failsafe mode
    whose word a restarted member no longer remembers)."""

    wal_position: int | None = None
    primary: bool = False


def with_positions(view: ClusterView, answers: Mapping[str, PeerAnswer | None]) -> ClusterView:
    """`view` with the positions the asked members gave (one that did not answer keeps what it published) and the
    members that answered as a running primary (`ClusterView.live_primaries`)."""
    given = {name: answer for name, answer in answers.items() if answer is not None}
    primaries = frozenset(name for name, answer in given.items() if answer.primary)
    if not any(answer.wal_position is not None for answer in given.values()) and not primaries:
        return view

    def fresh(member: Member) -> Member:
        answer = given.get(member.name)
        position = answer.wal_position if answer else None
        return member if position is None else replace(member, wal_position=position)

    return replace(view, members=tuple(fresh(member) for member in view.members), live_primaries=primaries)


def failsafe_timeout_s(config: ClusterConfig) -> float:
    """How long a leader in failsafe mode waits for each member's answer (Patroni's 2 s), within retry_timeout."""
    return min(2.0, config.retry_timeout_s)


FAILSAFE_OFF = "failsafe_mode is not enabled"  # the refusal the REST API answers with 502, as Patroni's members do


def failsafe_refusal(name: str, memory: Memory, writable: bool, config: ClusterConfig, leader: str) -> str | None:
    """Why this node's REST API refuses `leader`'s POST /failsafe, or None to accept it (and record it as the
    driver's `Readings.failsafe_ping`: for ttl this node then takes no part in a leader race). A node that leads,
    races or takes writes refuses, so that the asking leader goes read-only rather than meet another primary."""
    if not config.failsafe_mode:
        return FAILSAFE_OFF
    if leader == name:
        return f"{name} is this node"
    if writable or memory.state is State.LEADER:
        return "Running as a leader"
    if memory.state is State.CANDIDATE:
        return "racing for the leader key"
    return None


def failsafe_is_active(memory: Memory, observation: Observation | None) -> bool:
    """Patroni's `failsafe_mode_is_active`: this leader's lease is held by the failsafe members' word, or, as the
    last turn (`observation`) saw it, this node heard a leader's POST /failsafe within ttl."""
    if memory.state is State.LEADER and memory.failsafe_active:
        return True
    return observation is not None and derive_facts(observation).truth["failsafe_leader_alive"]


def step(name: str, memory: Memory, readings: Readings, now_s: float) -> Turn:
    """Observe from the memory and the readings, decide, and move the memory to the decision's state."""
    pg = readings.postgres
    if pg.running:
        down_since = None
    else:
        down_since = memory.postgres_down_since_s if memory.postgres_down_since_s is not None else now_s
    failsafe_view = readings.view.failsafe if readings.view is not None else memory.failsafe_view
    agent = AgentState(
        tags=readings.tags,
        create_replica_methods=readings.create_replica_methods,
        lease_renewed_at_s=memory.lease_renewed_at_s,
        lease_ttl_s=memory.lease_ttl_s,
        postgres_down_since_s=down_since,
        last_outcome=memory.last_outcome,
        request=readings.request,
        scheduled=readings.scheduled,
        failsafe_view=failsafe_view,
        failsafe_active=memory.failsafe_active,
        failsafe_ping=readings.failsafe_ping,
    )
    trigger = Trigger.SHUTDOWN if readings.shutting_down else Trigger.TICK
    observation = Observation(name, now_s, readings.config, readings.view, pg, agent, trigger)
    decision = decide(memory.state, observation)
    moved = replace(
        memory,
        state=decision.state,
        postgres_down_since_s=down_since,
        last_outcome=ActionOutcome(),
        actions_run=0,
        last_rule=decision.rule,
        next_due_s=next_due_s(observation),
        turn_ttl_s=readings.config.ttl_s,
        failsafe_view=failsafe_view,
    )
    return Turn(observation, decision, moved)


def next_due_s(observation: Observation) -> float | None:
    """The earliest scheduled time still ahead: the scheduled restart's, or the failover key's as this node's
    clock reads it. The next turn comes no later (`Wake.by_s`), so that it runs on time, not up to loop_wait late."""
    scheduled, view = observation.agent.scheduled, observation.dcs
    times = (
        scheduled.at_s if scheduled else None,
        view.failover.due_s if view is not None and view.failover is not None else None,
    )
    return min((t for t in times if t is not None and t > observation.now_s), default=None)


def remaining(memory: Memory, decision: Decision | None) -> tuple[Action, ...]:
    """The decision's actions still to run: in order, none after one that failed (the next turn observes afresh
    instead of acting on a plan the failure made stale)."""
    if decision is None or memory.last_outcome.failed:
        return ()
    return decision.actions[memory.actions_run :]


def next_action(memory: Memory, decision: Decision) -> Action | None:
    """The action to run now, or None when the turn's actions are over."""
    left = remaining(memory, decision)
    return left[0] if left else None


def lease_deadline(memory: Memory, config: ClusterConfig) -> float | None:
    """The node's lease deadline (`fsm.lease`), by the ttl its last renewal wrote; None without a lease."""
    return lease_deadline_s(memory.lease_renewed_at_s, config, memory.lease_ttl_s)


def blocked(action: Action, memory: Memory, config: ClusterConfig, now_s: float) -> str | None:
    """Why `action` may not run at `now_s` although its decision asked for it (the decision may be seconds old),
    or None. Its preconditions are data on the action type."""
    if action.needs_valid_lease:
        deadline = lease_deadline(memory, config)
        if deadline is None or now_s >= deadline:
            return f"{type(action).__name__} needs a valid lease: the lease ran out before it could run"
    return None


def advance(memory: Memory, action: Action, ok: bool, started_at_s: float) -> Memory:
    """The memory after `action` ran (started at `started_at_s`) with outcome `ok`."""
    name, outcome = type(action).__name__, memory.last_outcome
    if ok:
        outcome = ActionOutcome(outcome.succeeded | {name}, outcome.failed)
    else:
        outcome = ActionOutcome(outcome.succeeded, outcome.failed | {name})
    memory = advance_keepalive(memory, action, ok, started_at_s)
    if ok and isinstance(action, PublishFailsafe):
        memory = replace(memory, failsafe_view=action.members)  # whom to ask in an outage: what the key now holds
    return replace(memory, last_outcome=outcome, actions_run=memory.actions_run + 1)


def takes_long(action: Action) -> bool:
    """Whether the driver keeps the node alive while `action` runs: every action that changes how Postgres runs
    may wait on Postgres far beyond ttl (a shutdown checkpoint, crash recovery, a basebackup, a rewind)."""
    return action.changes_postgres


def keepalive_interval_s(config: ClusterConfig) -> float:
    """How often the heartbeats repeat while a long action runs: every loop_wait, as the loop would renew."""
    return config.loop_wait_s


def keepalive(memory: Memory, decision: Decision) -> tuple[Action, ...]:
    """The heartbeats to repeat while one of `decision`'s long actions runs, so that neither the leader lease nor
    the member key lapses during a restart, a clone or a rewind (Patroni keeps its loop running meanwhile): a renew
    of the leader key when this turn took or renewed the lease (and did not end it), a watchdog ping when it armed
    or pinged the watchdog, and the decision's member record."""
    done = {ACTION_TYPES[name] for name in memory.last_outcome.succeeded}
    effects = {kind.lease_effect for kind in done}
    holds = LeaseEffect.RENEWS in effects and LeaseEffect.ENDS not in effects
    beats: tuple[Action, ...] = (RenewLeaderKey(),) if holds else ()
    if holds and done & {ArmWatchdog, PingWatchdog}:
        beats += (PingWatchdog(),)
    return beats + tuple(action for action in decision.actions if isinstance(action, PublishMember))


def advance_keepalive(memory: Memory, action: Action, ok: bool, started_at_s: float) -> Memory:
    """The memory after a heartbeat (or any action) started at `started_at_s` ended with `ok`: the lease it renewed
    or ended. A keepalive heartbeat is not one of the turn's actions: the turn's outcomes stay as they were."""
    if not ok or action.lease_effect is LeaseEffect.NONE:
        return memory
    if action.lease_effect is LeaseEffect.ENDS:
        return replace(memory, lease_renewed_at_s=None, lease_ttl_s=None, failsafe_active=False)
    # The request's start: the DCS applied it, or a member gave its word, no earlier.
    failsafe = action.lease_effect is LeaseEffect.FAILSAFE
    return replace(memory, lease_renewed_at_s=started_at_s, lease_ttl_s=memory.turn_ttl_s, failsafe_active=failsafe)


def end_turn(
    memory: Memory,
    before: State,
    decision: Decision,
    *,
    woken: bool = False,
    shutting_down: bool = False,
    config: ClusterConfig | None = None,
    now_s: float | None = None,
) -> tuple[Memory, Wake]:
    """When the next turn comes: never after a final decision; at once (up to MAX_IMMEDIATE turns in a row) when
    the state changed, an action failed, one that succeeded changed how Postgres runs (the REST API answers from
    the newest turn) or is `acted_on_next` (the initialize race won: initdb is the next turn's), or during the
    turn a watch fired (`woken`) or a shutdown was asked for; else after loop_wait, but no later than the next
    scheduled time nor, given `config` and `now_s`, the lease deadline still ahead (`wake_by_s`)."""
    if decision.final:
        return memory, Wake(WakeKind.STOP)
    outcome = memory.last_outcome
    done = [ACTION_TYPES[name] for name in outcome.succeeded]
    changed = any(kind.changes_postgres or kind.acted_on_next for kind in done)
    busy = before is not decision.state or bool(outcome.failed) or changed or woken or shutting_down
    again = busy and memory.immediate_turns < MAX_IMMEDIATE
    memory = replace(memory, immediate_turns=memory.immediate_turns + 1 if again else 0)
    watch = decision.state is not State.LEADER
    by_s = None if again else wake_by_s(memory, config, now_s)
    return memory, Wake(WakeKind.AT_ONCE if again else WakeKind.LOOP_WAIT, watch, by_s)


def deadline_ahead(memory: Memory, config: ClusterConfig, now_s: float) -> float | None:
    """The lease deadline, when it is still ahead of `now_s`; None without a lease or once it has passed."""
    deadline = lease_deadline(memory, config)
    return deadline if deadline is not None and deadline > now_s else None


def wake_by_s(memory: Memory, config: ClusterConfig | None, now_s: float | None) -> float | None:
    """The latest time the next turn may come: the next scheduled time, and a lease deadline still ahead. So a
    leader decides by its deadline however long loop_wait is, and its DCS requests end there too
    (`operation_deadline_s`): it never writes past the deadline unawares, whatever the timing settings."""
    ahead = deadline_ahead(memory, config, now_s) if config is not None and now_s is not None else None
    return min((t for t in (memory.next_due_s, ahead) if t is not None), default=None)


REFUSED_READ_S = 0.5  # the one short try at the DCS a leader makes after its failsafe round was refused


def read_deadline_s(memory: Memory, config: ClusterConfig, now_s: float) -> float | None:
    """By when a DCS request started at `now_s` gives up, beyond its own retry_timeout (None: no sooner): a lease
    deadline still ahead; and after a refused failsafe round (the turn after it comes at once), one short try, so
    that the leader goes read-only now, not stopped at its deadline by the fence."""
    ahead = deadline_ahead(memory, config, now_s)
    if "ConfirmFailsafe" in memory.last_outcome.failed:
        return min(now_s + REFUSED_READ_S, ahead if ahead is not None else math.inf)
    return ahead


def operation_deadline_s(memory: Memory, config: ClusterConfig, now_s: float) -> float:
    """By when a DCS operation started at `now_s` gives up: after retry_timeout, and no later than
    `read_deadline_s` (a leader learns it cannot renew by its deadline, not retry_timeout past it)."""
    sooner = read_deadline_s(memory, config, now_s)
    end = now_s + config.retry_timeout_s
    return end if sooner is None else min(end, sooner)
