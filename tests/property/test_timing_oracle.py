"""An oracle for timing: the lease deadline, the fence's firing time and the key's expiry computed from their
definitions (architecture guide, section 3), and the code held to them over generated renew times, request
latencies and clock drift; and boundary properties for every threshold the rules compare.

Definitions, written here again on purpose rather than imported:
- the leader's deadline (its own clock) = start of its last successful renew request + ttl - safety_margin;
- the key expires (the store's clock) no earlier than ttl after the store applied that renew, which happened at
  or after the request started;
- the fence fires at the leader's deadline.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, example, given
from hypothesis import strategies as st

from fsm import State, decide
from fsm import actions as a
from fsm import node as core
from fsm.actions import Demote
from fsm.facts import derive_facts
from fsm.lease import lease_deadline_s, lease_timing_problems, slow_dcs_keeps_lease
from fsm.observation import ClusterConfig, OperatorRequest, RequestKind
from runtime.executor import Context
from tests.worlds import CONFIG, NOW, agent, cluster, leader_view, members, observe, standby

configs = st.builds(
    ClusterConfig,
    ttl_s=st.floats(10, 60),
    loop_wait_s=st.just(1.0),
    retry_timeout_s=st.just(1.0),
    safety_margin_s=st.floats(1, 5),
)
renew_starts = st.floats(0, 10_000)
RESTART = OperatorRequest(RequestKind.RESTART)
latencies = st.floats(0, 2)  # from the request's start to the store applying it


def own_deadline(renew_start: float, config: ClusterConfig) -> float:
    return renew_start + config.ttl_s - config.safety_margin_s


@given(configs, renew_starts, latencies, st.floats(0, 1))
def test_the_core_records_the_renews_start_and_the_fence_fires_at_the_defined_deadline(
    config: ClusterConfig, start: float, latency: float, later: float
):
    memory = core.advance(core.Memory(State.LEADER), a.RenewLeaderKey(), True, started_at_s=start)
    fence = Context(None, config, memory).lease_deadline()  # what ArmWatchdog / PingWatchdog hand the fence
    assert fence == own_deadline(start, config)
    key_expiry = start + latency + config.ttl_s  # the store's clock, assumed here to agree with the leader's
    assert fence <= key_expiry - config.safety_margin_s
    failed_renew = core.advance(memory, a.RenewLeaderKey(), False, started_at_s=start + later)
    assert Context(None, config, failed_renew).lease_deadline() == fence  # a failed renew moves nothing


@given(configs, renew_starts, latencies, st.floats(0.0, 1.0), st.floats(0.0, 30.0))
def test_a_leader_stops_writes_before_its_key_can_expire_despite_clock_drift(
    config: ClusterConfig, start: float, latency: float, drift_share: float, after_s: float
):
    """The leader's clock may run slow by any rate the margin covers (margin / ttl, the drift it is sized for,
    less a share). At every moment from the key's earliest expiry on, as the leader's own clock reads it, its
    decision is to stop writes first."""
    rate = 1 - drift_share * 0.5 * config.safety_margin_s / config.ttl_s  # leader seconds per real second
    key_expiry_real = start + latency + config.ttl_s  # real time: the leader's clock read `start` at real `start`
    now_local = start + (key_expiry_real + after_s - start) * rate
    assume(now_local >= start)
    renewed = core.advance(core.Memory(State.LEADER), a.RenewLeaderKey(), True, started_at_s=start)
    obs = leader_view(config=config, now_s=now_local, agent=agent(lease_renewed_at_s=renewed.lease_renewed_at_s))
    decision = decide(State.LEADER, obs)
    assert decision.state is State.DEMOTING and isinstance(decision.actions[0], Demote), decision.rule


@given(st.floats(-1.0, 1.0))
@example(0.0)
def test_the_lease_is_valid_strictly_before_the_deadline(offset_s: float):
    deadline = own_deadline(NOW - 10, CONFIG)
    obs = leader_view(now_s=deadline + offset_s, agent=agent(lease_renewed_at_s=NOW - 10))
    assert derive_facts(obs).truth["lease_valid"] is (obs.now_s < deadline)


@given(st.integers(-2, 2))
@example(0)
@example(1)
def test_lag_exactly_at_the_limit_is_within_it_and_one_byte_more_is_not(delta: int):
    limit = CONFIG.maximum_lag_on_failover_bytes
    wal = 5_000_000
    view = cluster(None, leader_wal_position=wal + limit + delta)
    facts = derive_facts(observe(dcs=view, pg=standby(wal=wal))).truth
    assert facts["eligible"] is (delta <= 0)


@given(st.integers(1, 3), st.integers(-1, 1))
@example(1, 1)
def test_a_timeline_one_behind_the_clusters_newest_is_not_eligible(timeline: int, behind: int):
    newest = timeline + max(0, behind)
    others = tuple(replace(m, timeline=newest) if m.name != "n1" else m for m in members())
    view = cluster(None, members=others)
    facts = derive_facts(observe(dcs=view, pg=standby(timeline=timeline))).truth
    assert facts["eligible"] is (timeline >= newest)


@given(configs, renew_starts, st.floats(-5.0, 5.0), st.sampled_from([a.StartPrimary(), a.Promote()]))
@example(ClusterConfig(), 100.0, 0.0, a.Promote())
def test_writes_start_only_strictly_before_the_defined_deadline_however_old_the_decision(
    config: ClusterConfig, start: float, offset_s: float, action: a.Action
):
    """The driver's last check before Postgres takes writes (`fsm.node.blocked`), held to the deadline's
    definition: a decision taken in time does not license a StartPrimary or Promote that runs at or past it."""
    memory = core.advance(core.Memory(State.LEADER), a.RenewLeaderKey(), True, started_at_s=start)
    runs_at = own_deadline(start, config) + offset_s
    assert (core.blocked(action, memory, config, runs_at) is None) is (runs_at < own_deadline(start, config))
    assert core.blocked(action, core.Memory(State.LEADER), config, runs_at) is not None  # never renewed


@given(
    st.floats(10, 60), st.floats(1, 10), st.floats(1, 5), st.floats(1, 5), st.floats(0, 600),
    st.lists(st.floats(0, 1), min_size=1, max_size=60),
)  # fmt: skip
def test_a_long_action_never_outlasts_the_lease_while_its_heartbeats_succeed(
    ttl: float, loop_wait: float, retry: float, margin: float, duration: float, latencies: list[float]
):
    """However long a restart runs, a leader whose keepalive renewals succeed (each within retry_timeout of the
    interval, as the lease argument allows) has a valid lease at every moment of it: the next renewal always
    starts before the deadline the previous one set."""
    config = ClusterConfig(ttl_s=ttl, loop_wait_s=loop_wait, retry_timeout_s=retry, safety_margin_s=margin)
    assume(not lease_timing_problems(config) and slow_dcs_keeps_lease(config))
    decision = decide(State.LEADER, leader_view(config=config, agent=agent(renewed_ago_s=1.0, request=RESTART)))
    assert decision.rule == "lead_restart_request"
    memory = core.Memory(State.LEADER, lease_renewed_at_s=NOW - 1.0)
    while not core.takes_long(action := core.next_action(memory, decision)):
        memory = core.advance(memory, action, True, NOW)
    started, beat_at = NOW, NOW
    for latency in latencies:
        beat_at += core.keepalive_interval_s(config) + latency * retry  # a slow previous beat delays this one
        if beat_at > started + duration:
            break
        deadline = lease_deadline_s(memory.lease_renewed_at_s, config)
        assert deadline is not None and beat_at < deadline  # still leading when the heartbeat starts
        for beat in core.keepalive(memory, decision):
            memory = core.advance_keepalive(memory, beat, True, beat_at)
        assert memory.lease_renewed_at_s == beat_at
