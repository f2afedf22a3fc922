"""Safety properties of decide() over generated observations (any state, any facts)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from fsm import State, decide
from fsm.actions import (
    AcquireLeaderKey,
    ArmWatchdog,
    CloneReplica,
    Demote,
    FollowLeader,
    PrepareSyncStandby,
    Promote,
    ReleaseLeaderKey,
    SetSyncStandby,
    StartPrimary,
    StartStandby,
    StopPostgres,
)
from fsm.facts import derive_facts
from fsm.observation import LeaderKey, Observation, Trigger
from tests.property.strategies import (
    ME,
    failover_observations,
    observations,
    states,
    sync_leader_observations,
    writable,
)


def kinds(decision) -> list[type]:
    return [type(a) for a in decision.actions]


@given(states, observations)
def test_decide_is_deterministic(state: State, observation: Observation):
    assert decide(state, observation) == decide(state, observation)


@given(states, observations)
def test_never_makes_postgres_writable_without_a_valid_lease_on_the_key(state: State, observation: Observation):
    facts = derive_facts(observation).truth
    actions = kinds(decide(state, observation))
    if Promote in actions or StartPrimary in actions:
        assert facts["holds_leader_key"] and facts["lease_valid"]


@given(states, observations)
def test_never_races_or_promotes_an_ineligible_node(state: State, observation: Observation):
    facts = derive_facts(observation).truth
    decision = decide(state, observation)
    if AcquireLeaderKey in kinds(decision) and not facts["holds_leader_key"] and decision.rule != "boot_won_init":
        assert facts["eligible"], decision.why
    if Promote in kinds(decision) and state is not State.LEADER and decision.rule != "cand_won_init":
        assert facts["eligible"], decision.why


def _takes_over(state: State, observation: Observation) -> bool:
    """The decision races for the key or promotes as a failover (not the first leader of a new cluster)."""
    decision = decide(state, observation)
    facts = derive_facts(observation).truth
    if decision.rule in ("boot_won_init", "cand_won_init"):
        return False
    races = AcquireLeaderKey in kinds(decision) and not facts["holds_leader_key"]
    return races or (Promote in kinds(decision) and state is not State.LEADER)


@given(states, observations)
def test_never_takes_over_with_lag_beyond_the_limit(state: State, observation: Observation):
    view, pg = observation.dcs, observation.postgres
    if view is not None and view.leader_wal_position is not None and _takes_over(state, observation):
        lag = view.leader_wal_position - pg.wal_position
        assert lag <= observation.config.maximum_lag_on_failover_bytes


@given(states, observations)
def test_in_synchronous_mode_only_the_sync_standby_takes_over(state: State, observation: Observation):
    """The sync key's standby has every acknowledged commit, and so has the leader that wrote it: nobody else."""
    sync = observation.dcs.sync if observation.dcs else None
    if observation.config.synchronous_mode and sync and sync.leader and _takes_over(state, observation):
        assert observation.name in (sync.leader, sync.sync_standby)


@given(observations, st.floats(min_value=-3.0, max_value=3.0))
def test_a_leader_past_its_deadline_stops_writes(observation: Observation, seconds_to_deadline: float):
    """The deadline is set here from the architecture's definition, not taken from the facts under test: start of
    the last successful renew + ttl - safety margin. The renew is placed within seconds of it."""
    cfg = observation.config
    renewed = observation.now_s - (cfg.ttl_s - cfg.safety_margin_s) + seconds_to_deadline
    agent = replace(observation.agent, lease_renewed_at_s=renewed)
    decision = decide(State.LEADER, replace(observation, agent=agent, trigger=Trigger.TICK))
    if seconds_to_deadline <= 0:
        assert decision.state is State.DEMOTING and isinstance(decision.actions[0], Demote), decision.rule


@given(states, observations)
def test_becoming_leader_arms_the_watchdog_before_writes_start(state: State, observation: Observation):
    decision = decide(state, observation)
    if state is not State.LEADER and decision.state is State.LEADER:
        actions = kinds(decision)
        assert ArmWatchdog in actions and actions.index(ArmWatchdog) < actions.index(Promote), decision.rule


@given(states, observations.map(writable))
def test_an_agent_that_finds_postgres_writable_without_the_key_stops_it(state: State, observation: Observation):
    """Whatever the agent believes it is (after a restart: bootstrap), a primary it holds no valid lease for is
    fenced in this very decision, unless the cluster is paused for maintenance."""
    facts = derive_facts(observation).truth
    decision = decide(state, observation)
    if observation.trigger is Trigger.TICK and not facts["paused"] and decision.state is not State.LEADER:
        assert {Demote, StopPostgres} & set(kinds(decision)) or decision.state is State.DEMOTING, decision.rule


@given(states, observations)
def test_a_node_with_foreign_data_never_joins(state: State, observation: Observation):
    if derive_facts(observation).truth["data_dir_foreign"]:
        joins = {StartStandby, FollowLeader, CloneReplica, Promote, StartPrimary}
        assert not joins & set(kinds(decide(state, observation)))


@given(states, observations)
def test_writes_stop_before_the_key_is_released(state: State, observation: Observation):
    actions = kinds(decide(state, observation))
    if ReleaseLeaderKey in actions and Demote in actions:
        assert actions.index(Demote) < actions.index(ReleaseLeaderKey)


@given(states, observations)
def test_in_sync_mode_writes_resume_only_after_the_setting_matches_the_key(state: State, observation: Observation):
    """Issue 18: before StartPrimary or Promote the setting is made to name the key's standby (only a key under this
    node's own name is trusted to have one); otherwise the key is claimed with nobody before writes start."""
    decision = decide(state, observation)
    actions = kinds(decision)
    writes = [actions.index(k) for k in (StartPrimary, Promote) if k in actions]
    if not observation.config.synchronous_mode or not writes:
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
    if expected is None or pg.synchronous_standby_names != expected:
        assert SetSyncStandby in kinds(decision), decision.why


@given(failover_observations(), st.none() | st.floats(min_value=0.0, max_value=100.0))
def test_a_candidate_holding_the_key_without_a_fresh_lease_refreshes_it_and_never_promotes(
    observation: Observation, renewed_ago_s: float | None
):
    """A restarted agent finds the key still naming it: it knows no renewal of its own (or only one past its
    deadline), so it must refresh the key before it may promote."""
    cfg, view = observation.config, observation.dcs
    assert view is not None
    stale_by = cfg.ttl_s - cfg.safety_margin_s
    renewed = None if renewed_ago_s is None else observation.now_s - stale_by - renewed_ago_s
    held = replace(view, leader=LeaderKey(ME))
    observation = replace(observation, dcs=held, agent=replace(observation.agent, lease_renewed_at_s=renewed))
    decision = decide(State.CANDIDATE, observation)
    assert not {Promote, StartPrimary} & set(kinds(decision)), decision.rule
    if derive_facts(observation).truth["eligible"]:
        assert decision.rule == "cand_refresh_key" and AcquireLeaderKey in kinds(decision), decision.rule
