"""Safety properties of decide() over generated observations (any state, any facts)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import State, decide
from fsm.actions import (
    AcquireLeaderKey,
    ArmWatchdog,
    ClearSwitchoverRequest,
    CloneReplica,
    Demote,
    FollowLeader,
    PrepareSyncStandby,
    Promote,
    ReleaseLeaderKey,
    RenewLeaderKey,
    SetSyncStandby,
    StartPrimary,
    StartStandby,
    StopPostgres,
)
from fsm.facts import derive_facts
from fsm.observation import LeaderKey, Observation, Trigger
from tests.property.conditions import met
from tests.property.strategies import (
    ME,
    foreign,
    handover_moments,
    moments,
    observations,
    states,
    sync_leader_observations,
    takeover_moments,
    writable,
)

Moment = tuple[State, Observation]
# Properties whose condition holds only at a rare moment (a takeover, a handover): half their examples are such
# moments, and more of them, so that each condition is met at least conditions.MIN_MET times in the CI profile.
FOCUSED = settings(max_examples=max(settings.default.max_examples, 1000))


def kinds(decision) -> list[type]:
    return [type(a) for a in decision.actions]


@given(states, observations)
def test_decide_is_deterministic(state: State, observation: Observation):
    assert decide(state, observation) == decide(state, observation)


@FOCUSED
@given(moments | takeover_moments())
def test_never_makes_postgres_writable_without_a_valid_lease_on_the_key(moment: Moment):
    state, observation = moment
    facts = derive_facts(observation).truth
    actions = kinds(decide(state, observation))
    if met("writes start (Promote or StartPrimary)", Promote in actions or StartPrimary in actions):
        assert facts["holds_leader_key"] and facts["lease_valid"]


@FOCUSED
@given(moments | takeover_moments())
def test_never_races_or_promotes_an_ineligible_node(moment: Moment):
    state, observation = moment
    facts = derive_facts(observation).truth
    decision = decide(state, observation)
    races = AcquireLeaderKey in kinds(decision) and not facts["holds_leader_key"] and decision.rule != "boot_won_init"
    if met("races for a key it does not hold", races):
        assert facts["eligible"], decision.why
    promotes = Promote in kinds(decision) and state is not State.LEADER and decision.rule != "cand_won_init"
    if met("a non-leader promotes", promotes):
        assert facts["eligible"], decision.why


def _takes_over(state: State, observation: Observation) -> bool:
    """The decision races for the key or promotes as a failover (not the first leader of a new cluster)."""
    decision = decide(state, observation)
    facts = derive_facts(observation).truth
    if decision.rule in ("boot_won_init", "cand_won_init"):
        return False
    races = AcquireLeaderKey in kinds(decision) and not facts["holds_leader_key"]
    return races or (Promote in kinds(decision) and state is not State.LEADER)


@FOCUSED
@given(moments | takeover_moments())
def test_never_takes_over_with_lag_beyond_the_limit(moment: Moment):
    state, observation = moment
    view, pg = observation.dcs, observation.postgres
    known = view is not None and view.leader_wal_position is not None
    if met("takes over with the leader's position known", known and _takes_over(state, observation)):
        assert view is not None and view.leader_wal_position is not None
        lag = view.leader_wal_position - pg.wal_position
        assert lag <= observation.config.maximum_lag_on_failover_bytes


@FOCUSED
@given(moments | takeover_moments(sync=True))
def test_in_synchronous_mode_only_the_sync_standby_takes_over(moment: Moment):
    """The sync key's standby has every acknowledged commit, and so has the leader that wrote it: nobody else."""
    state, observation = moment
    sync = observation.dcs.sync if observation.dcs else None
    keyed = observation.config.synchronous_mode and sync is not None and sync.leader is not None
    if met("takes over in synchronous mode with a sync key", keyed and _takes_over(state, observation)):
        assert sync is not None
        assert observation.name in (sync.leader, sync.sync_standby)


@given(observations, st.floats(min_value=-3.0, max_value=3.0))
def test_a_leader_past_its_deadline_stops_writes(observation: Observation, seconds_to_deadline: float):
    """The deadline is set here from the architecture's definition, not taken from the facts under test: start of
    the last successful renew + ttl - safety margin. The renew is placed within seconds of it."""
    cfg = observation.config
    renewed = observation.now_s - (cfg.ttl_s - cfg.safety_margin_s) + seconds_to_deadline
    agent = replace(observation.agent, lease_renewed_at_s=renewed)
    decision = decide(State.LEADER, replace(observation, agent=agent, trigger=Trigger.TICK))
    if met("the leader is at or past its deadline", seconds_to_deadline <= 0):
        assert decision.state is State.DEMOTING and isinstance(decision.actions[0], Demote), decision.rule


@FOCUSED
@given(moments | takeover_moments(won=True))
def test_becoming_leader_arms_the_watchdog_before_writes_start(moment: Moment):
    state, observation = moment
    decision = decide(state, observation)
    if met("becomes leader", state is not State.LEADER and decision.state is State.LEADER):
        actions = kinds(decision)
        assert ArmWatchdog in actions and actions.index(ArmWatchdog) < actions.index(Promote), decision.rule


@given(states, observations.map(writable))
def test_an_agent_that_finds_postgres_writable_without_the_key_stops_it(state: State, observation: Observation):
    """Whatever the agent believes it is (after a restart: bootstrap), a primary it holds no valid lease for is
    fenced in this very decision, unless the cluster is paused for maintenance."""
    facts = derive_facts(observation).truth
    decision = decide(state, observation)
    unleased = observation.trigger is Trigger.TICK and not facts["paused"] and decision.state is not State.LEADER
    if met("writable without a lease, not paused", unleased):
        assert {Demote, StopPostgres} & set(kinds(decision)) or decision.state is State.DEMOTING, decision.rule


@given(moments | moments.map(foreign))
def test_a_node_with_foreign_data_never_joins(moment: Moment):
    state, observation = moment
    if met("foreign data", derive_facts(observation).truth["data_dir_foreign"]):
        joins = {StartStandby, FollowLeader, CloneReplica, Promote, StartPrimary}
        assert not joins & set(kinds(decide(state, observation)))


@FOCUSED
@given(moments | handover_moments())
def test_writes_stop_before_the_key_is_released(moment: Moment):
    state, observation = moment
    actions = kinds(decide(state, observation))
    if met("releases the key and demotes in one decision", ReleaseLeaderKey in actions and Demote in actions):
        assert actions.index(Demote) < actions.index(ReleaseLeaderKey)


@FOCUSED
@given(moments | takeover_moments(sync=True))
def test_in_sync_mode_writes_resume_only_after_the_setting_matches_the_key(moment: Moment):
    """Issue 18: before StartPrimary or Promote the setting is made to name the key's standby (only a key under this
    node's own name is trusted to have one); otherwise the key is claimed with nobody before writes start."""
    state, observation = moment
    decision = decide(state, observation)
    actions = kinds(decision)
    writes = [actions.index(k) for k in (StartPrimary, Promote) if k in actions]
    if not met("writes start in synchronous mode", observation.config.synchronous_mode and bool(writes)):
        return
    assert PrepareSyncStandby in actions[: min(writes)], decision.rule
    prepared = next(a for a in decision.actions if isinstance(a, PrepareSyncStandby))
    sync = observation.dcs.sync if observation.dcs else None
    if prepared.name is not None:
        assert sync is not None and sync.leader == observation.name and sync.sync_standby == prepared.name


@given(sync_leader_observations())
def test_a_leader_that_keeps_writing_repairs_a_setting_that_disagrees_with_the_key(observation: Observation):
    """A writable leader in synchronous mode whose synchronous_standby_names is not exactly the key's standby (or
    whose key is not its own) names its standby again in this decision."""
    decision = decide(State.LEADER, observation)
    view, pg = observation.dcs, observation.postgres
    if not (observation.config.synchronous_mode and view and decision.rule == "lead_steady" and pg.writable):
        return
    key = view.sync
    expected = frozenset({key.sync_standby} - {None}) if key and key.leader == observation.name else None
    disagree = expected is None or pg.synchronous_standby_names != expected
    if met("a writing sync leader whose setting or key disagree", disagree):
        assert SetSyncStandby in kinds(decision), decision.why


@given(takeover_moments(), st.none() | st.floats(min_value=0.0, max_value=100.0))
def test_a_candidate_holding_the_key_without_a_fresh_lease_refreshes_it_and_never_promotes(
    moment: Moment, renewed_ago_s: float | None
):
    """A restarted agent finds the key still naming it: it knows no renewal of its own (or only one past its
    deadline), so it must refresh the key before it may promote."""
    observation = moment[1]
    cfg, view = observation.config, observation.dcs
    assert view is not None
    stale_by = cfg.ttl_s - cfg.safety_margin_s
    renewed = None if renewed_ago_s is None else observation.now_s - stale_by - renewed_ago_s
    held = replace(view, leader=LeaderKey(ME))
    observation = replace(observation, dcs=held, agent=replace(observation.agent, lease_renewed_at_s=renewed))
    decision = decide(State.CANDIDATE, observation)
    assert not {Promote, StartPrimary} & set(kinds(decision)), decision.rule
    if met("an eligible candidate holds the key with a stale lease", derive_facts(observation).truth["eligible"]):
        assert decision.rule == "cand_refresh_key" and AcquireLeaderKey in kinds(decision), decision.rule


@given(handover_moments(), st.floats(min_value=-30.0, max_value=30.0), st.booleans())
def test_a_scheduled_switchover_hands_over_only_in_its_window(moment: Moment, due_in_s: float, readable: bool):
    """The failover key with a time: the leader renews and keeps leading before it, hands over from it until 1.5 x
    loop_wait after it, and clears a key missed by more, or whose time could not be read, without handing over."""
    state, observation = moment
    view = observation.dcs
    if view is None or view.failover is None or observation.trigger is not Trigger.TICK:
        return
    due_s = observation.now_s + due_in_s if readable else None
    scheduled = replace(view.failover, scheduled_at="2030-01-01T10:00:00+00:00", due_s=due_s)
    observation = replace(observation, dcs=replace(view, failover=scheduled))
    decision = decide(state, observation)
    actions = kinds(decision)
    late_s = None if due_s is None else observation.now_s - due_s  # as the clock reads it (NOW + 1e-45 is NOW)
    missed = late_s is None or late_s > observation.config.loop_wait_s * 1.5
    assert (ReleaseLeaderKey in actions) == (late_s is not None and late_s >= 0 and not missed), decision.why
    if late_s is not None and late_s < 0:
        assert decision.rule == "lead_await_switchover" and RenewLeaderKey in actions
    if missed:
        assert decision.rule == "lead_steady" and ClearSwitchoverRequest in actions, decision.why
