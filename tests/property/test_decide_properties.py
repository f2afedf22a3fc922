"""Safety properties of decide() over generated observations (any state, any facts)."""

from __future__ import annotations

from hypothesis import given

from fsm import State, decide
from fsm.actions import (
    AcquireLeaderKey,
    CloneReplica,
    Demote,
    FollowLeader,
    Promote,
    ReleaseLeaderKey,
    StartPrimary,
    StartStandby,
    StopPostgres,
)
from fsm.facts import derive_facts
from fsm.observation import Observation, Trigger
from tests.property.strategies import failover_observations, observations, states, takeover_states


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


@given(states | takeover_states, observations | failover_observations())
def test_never_takes_over_with_lag_beyond_the_limit(state: State, observation: Observation):
    view, pg = observation.dcs, observation.postgres
    if view is not None and view.leader_wal_position is not None and _takes_over(state, observation):
        lag = view.leader_wal_position - pg.wal_position
        assert lag <= observation.config.maximum_lag_on_failover_bytes


@given(states | takeover_states, observations | failover_observations())
def test_in_synchronous_mode_only_the_sync_standby_takes_over(state: State, observation: Observation):
    """The sync key's standby has every acknowledged commit, and so has the leader that wrote it: nobody else."""
    sync = observation.dcs.sync if observation.dcs else None
    if observation.config.synchronous_mode and sync and sync.leader and _takes_over(state, observation):
        assert observation.name in (sync.leader, sync.sync_standby)


@given(states, observations)
def test_a_leader_past_its_deadline_stops_writes(state: State, observation: Observation):
    facts = derive_facts(observation).truth
    if state is State.LEADER and observation.trigger is Trigger.TICK and not facts["lease_valid"]:
        decision = decide(state, observation)
        assert decision.state is State.DEMOTING and isinstance(decision.actions[0], Demote)


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
def test_a_non_leader_never_stays_writable_without_reacting(state: State, observation: Observation):
    facts = derive_facts(observation).truth
    decision = decide(state, observation)
    ends_writable = decision.state in (State.LEADER,)
    if facts["writable"] and not ends_writable and not facts["paused"] and observation.trigger is Trigger.TICK:
        stops_writes = {Demote, StopPostgres} & set(kinds(decision))
        assert stops_writes or decision.state is State.DEMOTING, decision.rule
