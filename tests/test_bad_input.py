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
    OperatorRequest,
    PostgresState,
    RequestKind,
    Tags,
    TimelineSwitch,
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


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClusterConfig(ttl_s=-1), "ttl_s must not be negative, got -1"),
        (lambda: ClusterConfig(ttl_s=0), "ttl_s must be positive"),
        (lambda: ClusterConfig(loop_wait_s=-2), "loop_wait_s must not be negative, got -2"),
        (lambda: ClusterConfig(retry_timeout_s="8"), "retry_timeout_s must be a number, got '8'"),  # type: ignore[arg-type]
        (lambda: ClusterConfig(safety_margin_s=float("nan")), "safety_margin_s must be a number, got nan"),
        (lambda: ClusterConfig(primary_start_timeout_s=-1), "primary_start_timeout_s must not be negative, got -1"),
        (
            lambda: ClusterConfig(maximum_lag_on_failover_bytes=-5),
            "maximum_lag_on_failover_bytes must not be negative, got -5",
        ),
        (lambda: Tags(failover_priority=-1), "failover_priority must not be negative, got -1"),
        (lambda: Member(""), "a member needs a name"),
        (lambda: Member("n1", wal_position=-1), "member n1 wal_position must not be negative, got -1"),
        (lambda: Member("n1", timeline=0), "member n1 timeline must be >= 1, got 0"),
        (
            lambda: ClusterView(members=(Member("n2"), Member("n1"), Member("n2"))),
            "duplicate member names: ['n1', 'n2', 'n2']",
        ),
        (lambda: ClusterView(leader_wal_position=-3), "leader_wal_position must not be negative, got -3"),
        (lambda: PostgresState(wal_written=-1), "wal_written must not be negative, got -1"),
        (lambda: PostgresState(wal_received=-2), "wal_received must not be negative, got -2"),
        (lambda: PostgresState(wal_replayed=-3), "wal_replayed must not be negative, got -3"),
        (lambda: PostgresState(timeline=0), "timeline must be >= 1, got 0"),
        (lambda: PostgresState(data_dir=DataDir.VALID, in_recovery=True), "a stopped Postgres cannot be in recovery"),
        (lambda: PostgresState(running=True), "Postgres cannot run without a valid data dir"),
        (lambda: agent(lease_renewed_at_s=-1), "lease_renewed_at_s must not be negative, got -1"),
        (lambda: agent(postgres_down_since_s=-2), "postgres_down_since_s must not be negative, got -2"),
        (lambda: agent(create_replica_methods=()), "create_replica_methods must name at least one method"),
        (lambda: observe(name=""), "the observation must name this node"),
        (lambda: observe(now_s=-1), "now_s must not be negative, got -1"),
        (lambda: observe(trigger="promote"), "unknown trigger 'promote'"),
        (lambda: observe(pg=evolve(PostgresState(), data_dir="valid")), "unknown data_dir 'valid'"),
        (lambda: observe(agent=agent(renewed_ago_s=-5)), f"a recorded time {NOW + 5} lies after now_s {NOW}"),
        (
            lambda: observe(agent=agent(postgres_down_since_s=NOW + 1)),
            f"a recorded time {NOW + 1} lies after now_s {NOW}",
        ),
        (lambda: LeaderKey(""), "the leader key must name its holder"),
        (lambda: LeaderKey("n1", version=-1), "leader key version must not be negative, got -1"),
        (lambda: FailoverRequest(), "a failover request names a leader or a candidate"),
        (lambda: FailoverRequest("n0", due_s=float("inf")), "due_s: inf"),
        (lambda: FailoverRequest("n0", due_s="soon"), "due_s: 'soon'"),  # type: ignore[arg-type]
        (
            lambda: agent(request=OperatorRequest(RequestKind.RESTART, at_s=5)),
            "a scheduled request goes in `scheduled`",
        ),
        (lambda: agent(scheduled=OperatorRequest(RequestKind.RESTART)), "`scheduled` needs its time, at_s"),
        (lambda: TimelineSwitch(timeline=0, switch_lsn=5), "history timeline must be >= 1, got 0"),
        (lambda: TimelineSwitch(timeline=2, switch_lsn=-1), "switch_lsn of timeline 2 must not be negative, got -1"),
        (lambda: OperatorRequest("restart"), "unknown request 'restart'"),  # type: ignore[arg-type]
        (lambda: OperatorRequest(RequestKind.RESTART, role="master"), "role must be primary or replica, got 'master'"),
        (lambda: OperatorRequest(RequestKind.RESTART, timeout_s=-1), "timeout_s must not be negative, got -1"),
        (lambda: OperatorRequest(RequestKind.RESTART, at_s=-1), "at_s must not be negative, got -1"),
        (lambda: OperatorRequest(RequestKind.REINITIALIZE, at_s=5), "only a restart can be scheduled"),
        (lambda: decide("primary", observe()), "unknown state 'primary'"),  # type: ignore[arg-type]
        (lambda: decide(State.FOLLOWER, {"name": "n1"}), "not an Observation: dict"),  # type: ignore[arg-type]
        (
            lambda: decide(State.FOLLOWER, observe(agent=agent(last_outcome=outcome("Frobnicate", "Zap Promote")))),
            "unknown action names in last_outcome: ['Frobnicate', 'Zap']",
        ),
    ],
)
def test_the_message_names_the_key_and_the_value(build, message):
    """The whole message: which key is wrong and the value it had (a log line an operator acts on)."""
    with pytest.raises(InvalidObservation) as raised:
        build()
    assert str(raised.value) == message


@pytest.mark.parametrize("role", [None, "primary", "replica"])
@pytest.mark.parametrize("timeout_s", [None, 0, 12.5])
def test_valid_operator_requests_are_accepted(role, timeout_s):
    request = OperatorRequest(RequestKind.RESTART, role=role, timeout_s=timeout_s)
    assert (request.role, request.timeout_s) == (role, timeout_s)


def test_the_boundary_values_are_valid():
    """Each limit itself is allowed: zero where a value must not be negative, one where a timeline starts, any
    positive ttl, a recorded time equal to now."""
    assert ClusterConfig(ttl_s=0.5, loop_wait_s=0, retry_timeout_s=0, safety_margin_s=0).ttl_s == 0.5
    assert ClusterConfig(ttl_s=1, primary_start_timeout_s=0, maximum_lag_on_failover_bytes=0).ttl_s == 1
    assert Tags(failover_priority=0).failover_priority == 0
    assert Member("n1", wal_position=0, timeline=1).timeline == 1
    assert TimelineSwitch(timeline=1, switch_lsn=0).switch_lsn == 0
    assert LeaderKey("n1", version=0).version == 0
    assert ClusterView(members=(Member("n1"), Member("n2")), leader_wal_position=0).leader_wal_position == 0
    assert PostgresState(data_dir=DataDir.VALID, running=True, in_recovery=True, timeline=1).in_recovery
    assert agent(lease_renewed_at_s=0, postgres_down_since_s=0).lease_renewed_at_s == 0
    at_now = observe(now_s=0, agent=agent(lease_renewed_at_s=0, postgres_down_since_s=0))
    assert at_now.now_s == 0
    assert observe(agent=agent(renewed_ago_s=0, postgres_down_since_s=NOW)).agent.lease_renewed_at_s == NOW


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
