"""The rule table: every transition a Regent node can take, as data, run on the `transitions` library.

Read a row as: on `trigger` in `source`, if every fact in `when` holds and none in `unless` does, go to `dest`
(`=`: stay) and emit `actions` in order; `reason` says why in one line. Rows are tried top to bottom for the
node's state and the first match wins, so order is priority: safety rows come first in every block, and each
block ends with an unguarded row so that every observation gets a decision. Guards are facts from
`fsm.facts`; an `Act` with `when=` is emitted only if that fact holds. `decide()` appends PublishMember
whenever the DCS answered: a heartbeat, not a transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine, MachineError

from fsm.actions import (
    AcquireLeaderKey,
    Action,
    ApplyClusterParameters,
    ArmWatchdog,
    CancelInitialize,
    ClearSwitchoverRequest,
    CloneReplica,
    ConfirmFailsafe,
    Demote,
    DemoteMode,
    DisarmWatchdog,
    EnsureReplicationSlots,
    FollowLeader,
    InitDb,
    PingWatchdog,
    PrepareSyncStandby,
    Promote,
    PublishFailsafe,
    PublishHistory,
    PublishLeaderOptime,
    RaceForInitialize,
    Reclone,
    RefuseRequest,
    ReleaseLeaderKey,
    RenewLeaderKey,
    RestartPrimary,
    RestartStandby,
    RewindFromLeader,
    RunCallback,
    SetInitializeKey,
    SetSyncStandby,
    StartPrimary,
    StartStandby,
    StopPostgres,
)
from fsm.facts import Facts
from fsm.observation import Trigger
from fsm.states import State


@dataclass(frozen=True)
class Act:
    """One action a row emits: its type, the arguments the row fixes, and the fact it is conditional on."""

    kind: type[Action]
    when: str | None = None
    args: tuple[tuple[str, Any], ...] = ()

    def build(self, facts: Facts) -> Action | None:
        if self.when is not None and not facts.truth[self.when]:
            return None
        return self.kind.plan(facts, **dict(self.args))

    def __str__(self) -> str:
        fixed = ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in self.args)
        text = f"{self.kind.__name__}({fixed})" if fixed else self.kind.__name__
        return f"{text} if {self.when}" if self.when else text


def act(kind: type[Action], when: str | None = None, **args: Any) -> Act:
    return Act(kind, when, tuple(sorted(args.items())))


@dataclass(frozen=True)
class Rule:
    name: str
    trigger: Trigger
    source: tuple[State, ...]
    dest: State | None  # None: stay where it is
    reason: str
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    actions: tuple[Act, ...] = field(default=())
    also: tuple[str, ...] = ()  # facts reported in `why` besides the guards (what a fallback row fell back on)
    final: bool = False  # the agent ends once this row's actions have run (a shutdown)

    @property
    def guards(self) -> tuple[str, ...]:
        return self.when + self.unless

    @property
    def reported(self) -> tuple[str, ...]:
        return self.guards + self.also


def rule(
    name: str,
    trigger: Trigger,
    source: State | tuple[State, ...],
    dest: State | None,
    *actions: type[Action] | Act,
    when: str = "",
    unless: str = "",
    also: str = "",
    final: bool = False,
    reason: str,
) -> Rule:
    """A row; `when`, `unless` and `also` are space-separated fact names; bare action types take no arguments."""
    sources = source if isinstance(source, tuple) else (source,)
    acts = tuple(a if isinstance(a, Act) else Act(a) for a in actions)
    guards = tuple(when.split()), tuple(unless.split())
    return Rule(name, trigger, sources, dest, reason, *guards, acts, tuple(also.split()), final)


TICK, SHUTDOWN = Trigger.TICK, Trigger.SHUTDOWN
BOOT, FOLLOW, CAND, LEAD, DEMO = State.BOOTSTRAP, State.FOLLOWER, State.CANDIDATE, State.LEADER, State.DEMOTING
SAME = None
STOP_WRITES = act(Demote, mode=DemoteMode.IMMEDIATE)
NOW_PRIMARY = act(RunCallback, event="on_role_change", role="primary")
NOW_REPLICA = act(RunCallback, event="on_role_change", role="replica")
STOPPED = act(RunCallback, event="on_stop", role="replica")
KEEP_LEASE = (RenewLeaderKey, PingWatchdog)
SYNC_FIRST = act(PrepareSyncStandby, "synchronous_mode")  # before Postgres takes writes: the setting matches the key
# What a leader does every loop after renewing, when it has nothing else to do: keep the cluster's keys current.
KEEP_KEYS = (
    act(SetInitializeKey, "initialize_unset"),
    act(PublishHistory, "history_behind"),
    act(EnsureReplicationSlots, "use_slots"),
    PublishLeaderOptime,
    act(SetSyncStandby, "sync_standby_stale"),
    act(ApplyClusterParameters, "parameters_stale"),
    act(PublishFailsafe, "failsafe_stale"),
)
READ_ONLY = act(Demote, mode=DemoteMode.READ_ONLY)

# fmt: off
RULES: tuple[Rule, ...] = (
    # bootstrap: get data of this cluster, by initdb (the initialize race's winner) or by cloning the leader
    rule("boot_paused", TICK, BOOT, SAME, when="paused", reason="maintenance mode: no bootstrap actions"),
    rule("boot_stop_writes", TICK, BOOT, DEMO, STOP_WRITES, when="writable",
         reason="writable without a lease of mine: stop writes now"),
    rule("boot_dcs_down", TICK, BOOT, SAME, unless="dcs_reachable", reason="DCS unreachable: wait"),
    rule("boot_won_init", TICK, BOOT, CAND, InitDb, AcquireLeaderKey, when="won_initialize_race",
         reason="won the initialize race: initdb, then take the leader key"),
    rule("boot_foreign_data", TICK, BOOT, SAME, when="data_dir_foreign", reason="data of another cluster: never join it"),
    rule("boot_race_init", TICK, BOOT, SAME, RaceForInitialize, when="init_key_free", unless="nofailover",
         reason="cluster not initialized: race for the initialize key"),
    rule("boot_resume_lead", TICK, BOOT, CAND, AcquireLeaderKey, when="data_dir_usable holds_leader_key",
         reason="the leader key still names me: refresh it before taking writes"),
    rule("boot_clone", TICK, BOOT, FOLLOW, CloneReplica, StartStandby, when="leader_running", unless="data_dir_usable",
         reason="no usable data: clone from the running leader"),
    rule("boot_rejoin", TICK, BOOT, FOLLOW, StartStandby, when="data_dir_usable cluster_initialized",
         reason="data of this cluster: start as a standby"),
    rule("boot_wait", TICK, BOOT, SAME, also="cluster_initialized leader_running", reason="waiting for a running leader to clone from"),
    # follower: stream from the leader; race only when the key is gone and this node is eligible and first
    rule("follow_paused", TICK, FOLLOW, SAME, when="paused", reason="maintenance mode: no failover, no restarts"),
    rule("follow_lost_data", TICK, FOLLOW, BOOT, unless="data_dir_usable", reason="data directory unusable: clone again"),
    rule("follow_foreign_data", TICK, FOLLOW, BOOT, StopPostgres, when="data_dir_foreign",
         reason="data of another cluster: stop, never join"),
    rule("follow_stop_writes", TICK, FOLLOW, DEMO, STOP_WRITES, when="writable",
         reason="writable without the leader key: stop writes now"),
    rule("follow_dcs_down", TICK, FOLLOW, SAME, unless="dcs_reachable", reason="DCS unreachable: keep replaying, no election"),
    rule("follow_holds_key", TICK, FOLLOW, CAND, AcquireLeaderKey, when="holds_leader_key",
         reason="the leader key names me: refresh it, then promote"),
    rule("follow_start", TICK, FOLLOW, SAME, StartStandby, unless="postgres_running", reason="Postgres down: start it as a standby"),
    rule("follow_failsafe_leader", TICK, FOLLOW, SAME, when="leader_key_free failsafe_leader_alive",
         reason="the leader key lapsed, but its leader asked me within ttl to let it lead on (failsafe): no race"),
    rule("follow_peer_primary", TICK, FOLLOW, SAME, when="leader_key_free peer_runs_primary",
         reason="the leader key is free, but a member answers that it runs as a primary: no race"),
    rule("follow_race", TICK, FOLLOW, CAND, AcquireLeaderKey, when="leader_key_free eligible first_in_line",
         reason="leader key free and I am the first eligible member: race for it"),
    rule("follow_not_eligible", TICK, FOLLOW, SAME, when="leader_key_free", unless="eligible",
         reason="leader key free but I may not be promoted"),
    rule("follow_defer", TICK, FOLLOW, SAME, when="leader_key_free", also="first_in_line", reason="leader key free; another member goes first"),
    rule("follow_refuse_request", TICK, FOLLOW, SAME, RefuseRequest, when="request_refused", reason="an operator request I cannot honour: refuse it"),
    rule("follow_reinit", TICK, FOLLOW, SAME, Reclone, StartStandby, when="reinit_requested",
         reason="operator reinitialize: move my data aside, clone the leader afresh, start as its standby"),
    rule("follow_restart_request", TICK, FOLLOW, SAME, RestartStandby, when="restart_requested", also="scheduled_restart_due",
         reason="operator restart of the standby (now, or at its scheduled time)"),
    rule("follow_diverged", TICK, FOLLOW, DEMO, when="diverged leader_running", reason="my history forked from the leader's: repair it"),
    rule("follow_repoint", TICK, FOLLOW, SAME, FollowLeader, when="leader_key_held_by_other", unless="following_upstream",
         reason="not streaming from the leader (or the replica replicatefrom names): re-point"),
    rule("follow_steady", TICK, FOLLOW, SAME, act(ApplyClusterParameters, "parameters_stale"),
         act(EnsureReplicationSlots, "cascade_slots_stale"), also="following_upstream", reason="streaming from its upstream"),
    # candidate: hold the key before promoting; give up as soon as the race is lost or eligibility goes
    rule("cand_failsafe_leader", TICK, CAND, FOLLOW, act(ReleaseLeaderKey, "holds_leader_key"), when="failsafe_leader_alive",
         reason="a leader in failsafe mode asked me to let it lead on after I raced: give the key back"),
    rule("cand_won_init", TICK, CAND, LEAD, ArmWatchdog, SYNC_FIRST, StartPrimary, Promote, NOW_PRIMARY,
         when="holds_leader_key lease_valid initialize_unset", reason="bootstrapping the cluster and holding the key: start as its primary"),
    rule("cand_won", TICK, CAND, LEAD, ArmWatchdog, SYNC_FIRST, StartPrimary, Promote, NOW_PRIMARY, when="holds_leader_key lease_valid eligible",
         reason="holding the leader key with a valid lease, still eligible: promote"),
    rule("cand_stop_writes", TICK, CAND, DEMO, STOP_WRITES, when="writable",
         reason="writable without a valid lease of mine: stop writes now"),
    rule("cand_dcs_down", TICK, CAND, FOLLOW, unless="dcs_reachable", reason="DCS unreachable: abandon the race"),
    rule("cand_init_failed", TICK, CAND, BOOT, CancelInitialize, unless="data_dir_usable",
         reason="initdb failed: give the initialize key back"),
    rule("cand_unfit", TICK, CAND, FOLLOW, ReleaseLeaderKey, when="holds_leader_key", unless="eligible",
         reason="holding the leader key but no longer eligible: give it back"),
    rule("cand_refresh_key", TICK, CAND, SAME, AcquireLeaderKey, when="holds_leader_key",
         reason="the key names me but my lease is not fresh: refresh it"),
    rule("cand_lost", TICK, CAND, FOLLOW, when="leader_key_held_by_other", reason="another member took the leader key"),
    rule("cand_retry", TICK, CAND, SAME, AcquireLeaderKey, when="eligible first_in_line", reason="key still free: try again"),
    rule("cand_give_up", TICK, CAND, FOLLOW, also="eligible first_in_line", reason="no longer eligible or first in line"),
    # leader: renew every loop; stop writes before the lease can expire; hand over on request or crash
    rule("lead_lease_expired", TICK, LEAD, DEMO, STOP_WRITES, DisarmWatchdog, NOW_REPLICA, unless="lease_valid",
         reason="past my lease deadline: stop writes now"),
    rule("lead_paused", TICK, LEAD, SAME, RenewLeaderKey, DisarmWatchdog, when="paused",
         reason="maintenance mode: keep the key, leave Postgres alone"),
    rule("lead_foreign_data", TICK, LEAD, DEMO, STOP_WRITES, ReleaseLeaderKey, DisarmWatchdog, NOW_REPLICA,
         when="data_dir_foreign", reason="my data directory is another cluster's: never run it as this one's primary"),
    rule("lead_failsafe_refused", TICK, LEAD, DEMO, READ_ONLY, DisarmWatchdog, NOW_REPLICA, when="failsafe_refused",
         unless="dcs_reachable", reason="DCS unreachable and a member of the failsafe key did not accept: go read-only"),
    rule("lead_failsafe", TICK, LEAD, SAME, ConfirmFailsafe, PingWatchdog, when="in_failsafe_view", unless="dcs_reachable",
         reason="DCS unreachable, failsafe mode: lead on while every member of the failsafe key accepts"),
    rule("lead_retry_renew", TICK, LEAD, SAME, *KEEP_LEASE, when="lease_outlasts_retry", unless="dcs_reachable",
         reason="DCS unreachable but the lease outlasts another try: retry"),
    rule("lead_dcs_down", TICK, LEAD, DEMO, READ_ONLY, DisarmWatchdog, NOW_REPLICA,
         unless="dcs_reachable", reason="DCS unreachable and the lease is running out: go read-only"),
    rule("lead_failsafe_retake", TICK, LEAD, SAME, AcquireLeaderKey, PingWatchdog, when="failsafe_active leader_key_free",
         reason="the DCS is back after failsafe mode and the key lapsed: take it again before anything else"),
    rule("lead_lost_key", TICK, LEAD, DEMO, STOP_WRITES, DisarmWatchdog, NOW_REPLICA, unless="holds_leader_key",
         reason="the leader key is not mine: stop writes now"),
    rule("lead_hand_over", TICK, LEAD, DEMO, STOP_WRITES, ReleaseLeaderKey, DisarmWatchdog, NOW_REPLICA,
         when="restart_budget_spent", unless="postgres_running", reason="Postgres will not restart: hand over"),
    rule("lead_restart", TICK, LEAD, SAME, *KEEP_LEASE, SYNC_FIRST, StartPrimary, unless="postgres_running",
         reason="Postgres down: restart it as primary"),
    rule("lead_switchover", TICK, LEAD, DEMO, act(Demote, mode=DemoteMode.GRACEFUL), ReleaseLeaderKey, DisarmWatchdog,
         NOW_REPLICA, when="switchover_requested", reason="switchover requested: stop cleanly, hand the key over"),
    rule("lead_refuse_request", TICK, LEAD, SAME, *KEEP_LEASE, RefuseRequest, when="request_refused",
         reason="an operator request the leader cannot honour: refuse it, keep leading"),
    rule("lead_restart_request", TICK, LEAD, SAME, *KEEP_LEASE, RestartPrimary, when="restart_requested",
         also="scheduled_restart_due", reason="operator restart (now, or at its scheduled time): renew the lease, "
         "restart Postgres as primary while it holds"),
    rule("lead_promote", TICK, LEAD, SAME, *KEEP_LEASE, SYNC_FIRST, Promote, unless="writable", reason="Postgres read-only: promote"),
    rule("lead_await_switchover", TICK, LEAD, SAME, *KEEP_LEASE, *KEEP_KEYS, when="switchover_scheduled",
         reason="a switchover is scheduled for later: keep leading until its time"),
    rule("lead_steady", TICK, LEAD, SAME, *KEEP_LEASE, act(ClearSwitchoverRequest, "switchover_stale"), *KEEP_KEYS,
         also="lease_valid holds_leader_key", reason="leading: renew the lease, keep the cluster's keys current"),
    # demoting: writes stop first, then the key goes, then rejoin by following, pg_rewind or re-clone
    rule("demote_stop_writes", TICK, DEMO, SAME, STOP_WRITES, when="writable", reason="still writable: stop writes first"),
    rule("demote_release", TICK, DEMO, SAME, ReleaseLeaderKey, when="holds_leader_key", reason="writes stopped: release the key"),
    rule("demote_foreign_data", TICK, DEMO, BOOT, when="data_dir_foreign", reason="data of another cluster: never rejoin with it"),
    rule("demote_dcs_down", TICK, DEMO, FOLLOW, unless="dcs_reachable", reason="writes stopped, DCS unreachable: wait as a follower"),
    rule("demote_reclone", TICK, DEMO, BOOT, Reclone, when="diverged leader_running", unless="rewind_possible",
         reason="diverged and pg_rewind impossible: re-clone"),
    rule("demote_rewind", TICK, DEMO, SAME, StopPostgres, RewindFromLeader, StartStandby, when="diverged leader_running",
         reason="diverged from the leader: pg_rewind and start as a standby; rejoin (or, if it failed, re-clone) next"),
    rule("demote_rejoin", TICK, DEMO, FOLLOW, StartStandby, also="diverged", reason="writes stopped, key released: follow the leader"),
    # shutdown: leave Postgres alone in maintenance mode; otherwise stop it, a leader handing over its key
    rule("shutdown_paused", SHUTDOWN, tuple(State), SAME, when="paused", final=True, reason="maintenance mode: leave Postgres running"),
    rule("shutdown_leader", SHUTDOWN, LEAD, DEMO, act(Demote, mode=DemoteMode.GRACEFUL), ReleaseLeaderKey, DisarmWatchdog,
         STOPPED, final=True, reason="shutting down: stop cleanly, hand the key over"),
    rule("shutdown_member", SHUTDOWN, (BOOT, FOLLOW, CAND, DEMO), SAME, StopPostgres, ReleaseLeaderKey, STOPPED,
         final=True, reason="shutting down: stop Postgres"),
)
# fmt: on


class _Situation:
    """The model `transitions` moves: the node's state, with each fact an attribute the guards read by name."""

    def __init__(self, state: State, facts: Facts) -> None:
        self.__dict__.update(facts.truth)
        self.state = state
        self.fired: Rule | None = None

    def record(self, event: Any) -> None:
        self.fired = event.transition.rule


def _by_trigger(row: Rule) -> str:
    return row.trigger.value


def build_machine(
    rules: tuple[Rule, ...] = RULES,
    machine_class: type[Machine] = Machine,
    event_of: Callable[[Rule], str] = _by_trigger,
    **options: Any,
) -> Machine:
    """The rules as a `transitions` machine with no model attached; `options` go to the machine class.

    Rows become transitions in table order, so `transitions` tries them in that order and the first match wins.
    `event_of` names each row's event: its trigger for deciding; the diagrams pass the rule name instead, so that
    every edge is labelled with the rows it stands for.
    """
    machine = machine_class(
        model=None,
        states=list(State),
        initial=State.BOOTSTRAP,
        auto_transitions=False,
        send_event=True,
        after_state_change="record",
        ignore_invalid_triggers=False,
        **options,
    )
    for row in rules:
        name = event_of(row)
        machine.add_transition(
            name,
            source=list(row.source),
            dest=row.dest if row.dest is not None else "=",
            conditions=list(row.when),
            unless=list(row.unless),
        )
        for state in row.source:
            machine.events[name].transitions[state.name][-1].rule = row
    return machine


MACHINE = build_machine()


def fire(state: State, trigger: str, facts: Facts, machine: Machine | None = None) -> tuple[State, Rule]:
    """Run `trigger` from `state` on the machine; the first matching row wins. Raises `MachineError` for a
    trigger the state does not know (the state is left unchanged: there is nothing else to change)."""
    situation = _Situation(state, facts)
    event = (machine or MACHINE).events.get(trigger)
    if event is None:
        raise MachineError(f"unknown trigger {trigger!r}")
    event.trigger(situation)
    if situation.fired is None:
        raise RuntimeError(f"no rule matched {trigger} in {state.value}: the table must end each block unguarded")
    return situation.state, situation.fired
