"""Observations that cannot happen raise InvalidObservation with a message naming the problem."""

from __future__ import annotations

import pytest

from fsm import InvalidObservation, State, decide
from fsm.observation import (
    ClusterConfig,
    ClusterView,
    DataDir,
    FailoverRequest,
    LeaderKey,
    Member,
    PostgresState,
    Tags,
)
from tests.worlds import CONFIG, NOW, agent, evolve, observe, outcome


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClusterConfig(ttl_s=-1), "ttl_s must not be negative"),
        (lambda: ClusterConfig(ttl_s=0), "ttl_s must be positive"),
        (lambda: ClusterConfig(loop_wait_s=float("nan")), "loop_wait_s must be a number"),
        (lambda: ClusterConfig(maximum_lag_on_failover_bytes=-5), "maximum_lag_on_failover_bytes"),
        (lambda: Member("n1", wal_position=-1), "member n1 wal_position"),
        (lambda: Member("n1", timeline=0), "timeline must be >= 1"),
        (lambda: Member(""), "needs a name"),
        (lambda: Tags(failover_priority=-1), "failover_priority"),
        (lambda: LeaderKey(""), "must name its holder"),
        (lambda: FailoverRequest(), "names a leader or a candidate"),
        (lambda: ClusterView(members=(Member("n1"), Member("n1"))), "duplicate member names"),
        (lambda: ClusterView(leader_wal_position=-3), "leader_wal_position"),
        (lambda: PostgresState(data_dir=DataDir.VALID, wal_received=-1), "wal_received"),
        (lambda: PostgresState(data_dir=DataDir.VALID, running=False, in_recovery=True), "stopped Postgres"),
        (lambda: PostgresState(running=True), "without a valid data dir"),
        (lambda: observe(now_s=-1), "now_s must not be negative"),
        (lambda: observe(agent=agent(renewed_ago_s=-5)), "lies after now_s"),
        (lambda: observe(name=""), "must name this node"),
        (lambda: observe(trigger="promote"), "unknown trigger"),
    ],
)
def test_impossible_values_raise(build, message):
    with pytest.raises(InvalidObservation, match=message):
        build()


def test_unknown_state_raises():
    with pytest.raises(InvalidObservation, match="unknown state"):
        decide("primary", observe())  # type: ignore[arg-type]


def test_unknown_action_in_outcome_raises():
    with pytest.raises(InvalidObservation, match="unknown action names"):
        decide(State.FOLLOWER, observe(agent=agent(last_outcome=outcome(failed="Frobnicate"))))


def test_not_an_observation_raises():
    with pytest.raises(InvalidObservation, match="not an Observation"):
        decide(State.FOLLOWER, {"name": "n1"})  # type: ignore[arg-type]


def test_a_leader_key_naming_an_unknown_member_is_fine():
    decision = decide(State.FOLLOWER, observe(dcs=evolve(observe().dcs, leader=LeaderKey("ghost"))))
    assert decision.state is State.FOLLOWER


def test_observations_are_immutable():
    o = observe()
    with pytest.raises(AttributeError):
        o.now_s = NOW + 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        CONFIG.ttl_s = 5  # type: ignore[misc]
