"""The node core (`fsm.node`): the memory a node keeps between decisions and its loop policy, which the real agent
and the simulator both run."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fsm import State
from fsm import actions as a
from fsm import node as core
from fsm.lease import lease_deadline_s
from fsm.observation import (
    ActionOutcome,
    ClusterConfig,
    ClusterView,
    FailoverRequest,
    FailsafePing,
    LeaderKey,
    Member,
    OperatorRequest,
    PostgresState,
    RequestKind,
    Tags,
)
from tests.worlds import CONFIG, NOW, agent, cluster, evolve, observe, primary, standby, stopped

ROOT = Path(__file__).resolve().parent.parent


def readings(**changes: object) -> core.Readings:
    return replace(core.Readings(cluster(), primary(), CONFIG), **changes)  # type: ignore[arg-type]


def leading(renewed_ago_s: float = 1.0) -> core.Memory:
    return core.Memory(State.LEADER, lease_renewed_at_s=NOW - renewed_ago_s)


def test_a_step_moves_the_state_and_starts_the_turns_outcomes_afresh():
    memory = replace(leading(), last_outcome=ActionOutcome(frozenset({"RenewLeaderKey"}), frozenset()))
    turn = core.step("n0", memory, readings(), NOW)
    assert turn.decision.rule == "lead_steady" and turn.memory.state is State.LEADER
    assert turn.observation.agent.last_outcome.succeeded == {"RenewLeaderKey"}  # the decision saw the last turn's
    assert turn.memory.last_outcome == ActionOutcome() and turn.memory.last_rule == "lead_steady"


def test_postgres_down_since_is_the_first_turn_that_saw_it_down():
    first = core.step("n0", leading(), readings(postgres=stopped()), NOW)
    assert first.memory.postgres_down_since_s == NOW
    later = core.step("n0", first.memory, readings(postgres=stopped()), NOW + 5)
    assert later.memory.postgres_down_since_s == NOW
    assert later.observation.agent.postgres_down_since_s == NOW
    back = core.step("n0", later.memory, readings(), NOW + 6)
    assert back.memory.postgres_down_since_s is None


@pytest.mark.parametrize("kind", [a.StartPrimary, a.Promote])
def test_writes_start_only_while_the_lease_is_valid_when_the_action_runs(kind: type[a.Action]):
    memory = leading(renewed_ago_s=0.0)
    deadline = lease_deadline_s(memory.lease_renewed_at_s, CONFIG)
    assert deadline is not None
    assert core.blocked(kind(), memory, CONFIG, deadline - 0.001) is None
    why = f"{kind.__name__} needs a valid lease: the lease ran out before it could run"
    assert core.blocked(kind(), memory, CONFIG, deadline) == why
    assert core.blocked(kind(), core.Memory(), CONFIG, NOW) is not None  # never renewed
    assert core.blocked(a.RenewLeaderKey(), core.Memory(), CONFIG, NOW) is None


def test_a_successful_renew_records_its_start_and_a_release_ends_the_lease():
    memory = core.Memory(lease_renewed_at_s=100.0)
    renewed = core.advance(memory, a.RenewLeaderKey(), True, started_at_s=140.0)
    assert renewed.lease_renewed_at_s == 140.0 and renewed.last_outcome.succeeded == {"RenewLeaderKey"}
    failed = core.advance(renewed, a.PingWatchdog(), False, started_at_s=140.0)
    assert failed.lease_renewed_at_s == 140.0
    assert failed.last_outcome == ActionOutcome(frozenset({"RenewLeaderKey"}), frozenset({"PingWatchdog"}))
    failed = core.advance(memory, a.RenewLeaderKey(), False, started_at_s=140.0)
    assert failed.lease_renewed_at_s == 100.0 and failed.last_outcome.failed == {"RenewLeaderKey"}
    released = core.advance(renewed, a.ReleaseLeaderKey(), True, started_at_s=141.0)
    assert released.lease_renewed_at_s is None
    kept = core.advance(renewed, a.ReleaseLeaderKey(), False, started_at_s=141.0)
    assert kept.lease_renewed_at_s == 140.0  # the DCS did not answer: the key may still be ours


def renewed_under(ttl_s: float, at_s: float) -> core.Memory:
    """A leader's memory after a renew started at `at_s` in a turn whose settings said ttl `ttl_s`."""
    turn = core.step("n0", leading(), readings(config=replace(CONFIG, ttl_s=ttl_s)), at_s)
    return core.advance(turn.memory, a.RenewLeaderKey(), True, started_at_s=at_s)


def test_the_lease_lives_by_the_ttl_its_renewal_wrote_whatever_the_config_key_says_since():
    shorter = renewed_under(12.0, NOW)  # then the config key raised ttl to 30: the key still dies at NOW + 12
    assert core.lease_deadline(shorter, replace(CONFIG, ttl_s=30.0)) == NOW + 12.0 - CONFIG.safety_margin_s
    longer = renewed_under(30.0, NOW)  # then lowered to 12: the key was written to live 30 s
    assert core.lease_deadline(longer, replace(CONFIG, ttl_s=12.0)) == NOW + 30.0 - CONFIG.safety_margin_s
    later = core.step("n0", longer, readings(config=replace(CONFIG, ttl_s=12.0)), NOW + 15)
    assert later.observation.agent.lease_ttl_s == 30.0 and later.decision.rule == "lead_steady"
    assert later.memory.turn_ttl_s == 12.0  # this turn's renewal writes (and is held to) the new ttl
    released = core.advance(longer, a.ReleaseLeaderKey(), True, started_at_s=NOW + 1)
    assert released.lease_ttl_s is None and core.lease_deadline(released, CONFIG) is None
    blocked = core.blocked(a.Promote(), shorter, replace(CONFIG, ttl_s=30.0), NOW + 11.0)
    assert blocked is not None and "needs a valid lease" in blocked


def test_whom_a_follower_asks_for_positions_and_what_their_answers_change():
    members = (
        Member("n0", wal_position=100, api_url="http://n0/patroni"),
        Member("n1", wal_position=200),  # no REST API published: not asked
        Member("me", wal_position=300, api_url="http://me/patroni"),  # never myself
    )
    free = ClusterView(members=members)
    follower = core.Memory(State.FOLLOWER)
    assert [m.name for m in core.peers_to_ask("me", follower, free)] == ["n0"]
    assert core.peers_to_ask("me", follower, ClusterView(leader=LeaderKey("n0"), members=members)) == ()
    assert core.peers_to_ask("me", core.Memory(State.LEADER), free) == ()
    fresh = core.with_positions(free, {"n0": core.PeerAnswer(900), "n1": None})
    assert [(m.name, m.wal_position) for m in fresh.members] == [("n0", 900), ("n1", 200), ("me", 300)]
    assert fresh.members[0] == replace(members[0], wal_position=900)  # only the position changes
    assert core.with_positions(free, {"n0": None}) is free
    assert core.with_positions(free, {"n0": core.PeerAnswer(None, primary=True)}).live_primaries == {"n0"}
    assert core.position_timeout_s(replace(CONFIG, retry_timeout_s=2.0)) == 0.5
    assert core.position_timeout_s(CONFIG) == 1.0  # 8 s / 4, capped at 1 s


def decided(rule_state: State, memory: core.Memory, **outcome: frozenset[str]) -> tuple[core.Memory, core.Wake]:
    turn = core.step("n0", memory, readings(), NOW)
    ran = replace(turn.memory, last_outcome=ActionOutcome(**outcome))
    return core.end_turn(ran, rule_state, turn.decision)


def test_a_quiet_turn_sleeps_loop_wait_and_only_a_non_leader_watches_the_key():
    _, wake = decided(State.LEADER, leading(), succeeded=frozenset({"RenewLeaderKey"}))
    assert wake == core.Wake(core.WakeKind.LOOP_WAIT, watch=False)
    follower = core.step(
        "n1", core.Memory(State.FOLLOWER), readings(postgres=replace(primary(), in_recovery=True, following="n0")), NOW
    )
    _, wake = core.end_turn(follower.memory, State.FOLLOWER, follower.decision)
    assert wake.kind is core.WakeKind.LOOP_WAIT and wake.watch


@pytest.mark.parametrize(
    "outcome",
    [{"failed": frozenset({"RenewLeaderKey"})}, {"succeeded": frozenset({"StartPrimary"})}],
    ids=["an action failed", "Postgres changed"],
)
def test_the_next_turn_comes_at_once_after_a_failure_or_a_change_of_postgres(outcome):
    memory, wake = decided(State.LEADER, leading(), **outcome)
    assert wake.kind is core.WakeKind.AT_ONCE and memory.immediate_turns == 1


def test_the_initialize_race_winner_runs_initdb_on_its_next_turn_at_once():
    """The win is a fact of the next turn (`won_initialize_race`): waiting loop_wait for it delayed every new
    cluster's first primary by a whole loop_wait. A lost race changes nothing: the loser sleeps as before."""
    fresh = readings(view=ClusterView(), postgres=PostgresState())
    race = core.step("n0", core.Memory(), fresh, NOW)
    assert race.decision.rule == "boot_race_init"
    won = replace(race.memory, last_outcome=ActionOutcome(succeeded=frozenset({"RaceForInitialize"})))
    memory, wake = core.end_turn(won, State.BOOTSTRAP, race.decision)
    assert wake.kind is core.WakeKind.AT_ONCE and memory.immediate_turns == 1
    after = core.step("n0", memory, replace(fresh, view=ClusterView(initialize="")), NOW)
    assert after.decision.rule == "boot_won_init"
    lost = replace(race.memory, last_outcome=ActionOutcome(failed=frozenset({"RaceForInitialize"})))
    assert core.end_turn(lost, State.BOOTSTRAP, race.decision)[1].kind is core.WakeKind.AT_ONCE  # a failure
    quiet = replace(race.memory, last_outcome=ActionOutcome())
    assert core.end_turn(quiet, State.BOOTSTRAP, race.decision)[1].kind is core.WakeKind.LOOP_WAIT


def test_at_once_at_most_max_immediate_turns_in_a_row():
    memory = replace(leading(), immediate_turns=core.MAX_IMMEDIATE)
    memory, wake = decided(State.LEADER, memory, failed=frozenset({"RenewLeaderKey"}))
    assert wake.kind is core.WakeKind.LOOP_WAIT and memory.immediate_turns == 0


def test_a_watch_or_a_shutdown_during_the_turn_brings_the_next_at_once():
    turn = core.step("n0", leading(), readings(), NOW)
    assert core.end_turn(turn.memory, State.LEADER, turn.decision, woken=True)[1].kind is core.WakeKind.AT_ONCE
    assert core.end_turn(turn.memory, State.LEADER, turn.decision, shutting_down=True)[1].kind is core.WakeKind.AT_ONCE


def test_a_final_decision_ends_the_agent():
    turn = core.step("n0", leading(), readings(shutting_down=True), NOW)
    assert turn.decision.rule == "shutdown_leader" and turn.decision.final
    assert core.end_turn(turn.memory, State.LEADER, turn.decision)[1].kind is core.WakeKind.STOP


def test_effective_config_follows_the_dcs_key_and_the_granted_lease():
    local = ClusterConfig()
    assert core.effective_config(local, {"loop_wait": 5, "pause": True}).loop_wait_s == 5
    assert core.effective_config(local, {"ttl": -1}) == local  # an invalid key leaves the local settings
    assert core.effective_config(local, {"pause": "yes"}) == local  # the wrong kind is not taken
    assert core.effective_config(local, None, lease_ttl_s=20.0).ttl_s == 20.0
    assert core.effective_config(local, None, lease_ttl_s=20.0).loop_wait_s == 10.0  # 10 + 2 < 20: time enough
    short = core.effective_config(local, None, lease_ttl_s=10.0)  # 10 - safety_margin 2 leaves 8 s, < loop_wait
    assert (short.ttl_s, short.loop_wait_s) == (10.0, 4.0)
    with pytest.raises(ValueError):
        core.dynamic_config(local, {"ttl": -1})


def test_the_dcs_keys_pg_hba_lines_are_cluster_settings():
    local = ClusterConfig()
    lines = ["host all app 10.0.0.0/8 scram-sha-256", "host all all 0.0.0.0/0 reject"]
    stored = {"postgresql": {"pg_hba": lines, "parameters": {"work_mem": "8MB"}}}
    config = core.effective_config(local, stored)
    assert config.pg_hba == tuple(lines) and config.parameters == (("work_mem", "8MB"),)
    assert core.effective_config(local, {"postgresql": {"pg_hba": ["host all all ::1/128 trust", 7]}}) == local
    assert core.effective_config(local, {"postgresql": {"pg_hba": "host all all ::1/128 trust"}}) == local


def test_the_readings_tags_and_replica_methods_reach_the_observation():
    tags = Tags(nofailover=True, failover_priority=0)
    turn = core.step("n0", core.Memory(), readings(tags=tags, create_replica_methods=("wal_e", "basebackup")), NOW)
    assert turn.observation.agent.tags == tags
    assert turn.observation.agent.create_replica_methods == ("wal_e", "basebackup")


def test_actions_run_in_order_and_none_after_a_failure():
    turn = core.step("n0", leading(), readings(), NOW)
    actions = turn.decision.actions
    assert len(actions) >= 2
    memory = turn.memory
    assert core.next_action(memory, turn.decision) == actions[0]
    memory = core.advance(memory, actions[0], True, NOW)
    assert core.remaining(memory, turn.decision) == actions[1:]
    memory = core.advance(memory, actions[1], False, NOW)
    assert core.remaining(memory, turn.decision) == () and core.next_action(memory, turn.decision) is None
    assert core.remaining(memory, None) == ()


def test_a_turn_ends_after_its_last_action():
    turn = core.step("n0", leading(), readings(), NOW)
    memory = turn.memory
    for action in turn.decision.actions:
        memory = core.advance(memory, action, True, NOW)
    assert core.next_action(memory, turn.decision) is None
    again = core.step("n0", memory, readings(), NOW + 1)
    assert core.next_action(again.memory, again.decision) == again.decision.actions[0]


def run_until_long(memory: core.Memory, decision) -> tuple[core.Memory, a.Action]:
    """Succeed every action before the first long one; that one, as it starts."""
    while not core.takes_long(action := core.next_action(memory, decision)):
        memory = core.advance(memory, action, True, NOW)
    return memory, action


def test_a_leader_restarting_postgres_keeps_renewing_pinging_and_publishing():
    request = OperatorRequest(RequestKind.RESTART)
    turn = core.step("n0", leading(), readings(request=request), NOW)
    assert turn.decision.rule == "lead_restart_request"
    memory, long_action = run_until_long(turn.memory, turn.decision)
    assert isinstance(long_action, a.RestartPrimary)
    beats = core.keepalive(memory, turn.decision)
    assert [type(beat) for beat in beats] == [a.RenewLeaderKey, a.PingWatchdog, a.PublishMember]
    assert beats[-1] == next(x for x in turn.decision.actions if isinstance(x, a.PublishMember))
    assert core.keepalive_interval_s(CONFIG) == CONFIG.loop_wait_s


def test_a_recloning_follower_keeps_only_its_member_key_alive():
    request = OperatorRequest(RequestKind.REINITIALIZE)
    memory = core.Memory(State.FOLLOWER)
    turn = core.step("n1", memory, readings(postgres=standby(), request=request), NOW)
    assert turn.decision.rule == "follow_reinit"
    memory, long_action = run_until_long(turn.memory, turn.decision)
    assert isinstance(long_action, a.Reclone)
    assert [type(beat) for beat in core.keepalive(memory, turn.decision)] == [a.PublishMember]


def test_no_lease_is_kept_alive_once_the_turn_released_it_nor_a_watchdog_it_did_not_feed():
    turn = core.step("n0", leading(), readings(), NOW)
    renewed = core.advance(turn.memory, a.RenewLeaderKey(), True, NOW)
    assert [type(b) for b in core.keepalive(renewed, turn.decision)] == [a.RenewLeaderKey, a.PublishMember]
    pinged = core.advance(renewed, a.PingWatchdog(), True, NOW)
    assert a.PingWatchdog() in core.keepalive(pinged, turn.decision)
    released = core.advance(renewed, a.ReleaseLeaderKey(), True, NOW)
    assert a.RenewLeaderKey() not in core.keepalive(released, turn.decision)
    assert core.keepalive(core.Memory(), turn.decision) == tuple(
        x for x in turn.decision.actions if isinstance(x, a.PublishMember)
    )


def test_a_heartbeat_moves_the_lease_but_not_the_turns_outcomes():
    memory = replace(leading(), actions_run=2, last_outcome=ActionOutcome(frozenset({"RenewLeaderKey"}), frozenset()))
    beat = core.advance_keepalive(memory, a.RenewLeaderKey(), True, NOW + 10)
    assert beat.lease_renewed_at_s == NOW + 10
    assert beat.actions_run == 2 and beat.last_outcome == memory.last_outcome
    assert core.advance_keepalive(memory, a.RenewLeaderKey(), False, NOW + 10) == memory
    assert core.advance_keepalive(memory, a.ReleaseLeaderKey(), True, NOW + 10).lease_renewed_at_s is None


def test_every_action_that_changes_postgres_is_kept_alive_around():
    assert all(core.takes_long(kind) == kind.changes_postgres for kind in a.ACTION_TYPES.values())
    assert core.takes_long(a.RestartPrimary) and core.takes_long(a.CloneReplica)
    assert not core.takes_long(a.RenewLeaderKey)


POLICY_WRITTEN_TWICE = {
    "a lease renewal recorded outside the core": r"renewed_at(_s)?\s*=(?!=)",
    "a shutdown recognised by rule name": r"startswith\(\"shutdown",
    "an immediate-turn limit of its own": r"MAX_IMMEDIATE\s*=",
    "its own list of Postgres-changing actions": r"CHANGES_POSTGRES",
    "a lease check of its own before an action": r"_lease(_still)?_valid",
    "its own timeout for the peers' positions": r"retry_timeout_s\s*/\s*4",
    "its own walk over the decision's actions": r"for \w+ in (\w+\.)?decision\.actions|steps\[index\]",
    "its own judgement of a scheduled time": r"\.(at|due)_s\s*[<>]|[<>]=?\s*[\w.()]*\.(at|due)_s\b",
}


DRIVERS = ("runtime/agent.py", "runtime/executor.py", "model/world.py", "model/effects.py", "model/explore.py")


@pytest.mark.parametrize("path", [*DRIVERS, "tests/agent_world.py"])
def test_no_driver_writes_the_loop_policy_again(path: str):
    """The agent and the simulator step one core: neither keeps a copy of the memory's bookkeeping or the policy."""
    source = (ROOT / path).read_text()
    found = [what for what, pattern in POLICY_WRITTEN_TWICE.items() if re.search(pattern, source)]
    assert found == []


def test_the_driver_drops_a_scheduled_restart_once_a_turn_answered_it():
    restart = OperatorRequest(RequestKind.RESTART, at_s=NOW + 4)
    follower = readings(postgres=replace(primary(), in_recovery=True, following="n0"), scheduled=restart)
    waiting = core.step("n1", core.Memory(State.FOLLOWER), follower, NOW)
    assert waiting.decision.rule == "follow_steady" and not waiting.answered_scheduled
    assert waiting.memory.next_due_s == NOW + 4
    _, wake = core.end_turn(waiting.memory, State.FOLLOWER, waiting.decision)
    assert wake.kind is core.WakeKind.LOOP_WAIT and wake.by_s == NOW + 4  # not loop_wait late
    done = core.step("n1", waiting.memory, follower, NOW + 4)
    assert done.decision.rule == "follow_restart_request" and done.answered_scheduled
    assert done.memory.next_due_s is None
    first = core.step("n1", waiting.memory, replace(follower, request=OperatorRequest(RequestKind.RESTART)), NOW + 4)
    assert first.decision.rule == "follow_restart_request" and not first.answered_scheduled  # the immediate one


def test_a_scheduled_switchover_brings_the_next_turn_by_its_time():
    later = FailoverRequest("n0", "n1", scheduled_at="2030-01-01T10:00:00+00:00", due_s=NOW + 3)
    turn = core.step("n0", leading(), readings(view=cluster(failover=later)), NOW)
    assert turn.decision.rule == "lead_await_switchover" and turn.memory.next_due_s == NOW + 3


def test_the_operator_request_reaches_the_observation_and_the_memory_takes_the_new_state():
    request = OperatorRequest(RequestKind.RESTART, timeout_s=20)
    turn = core.step("n0", leading(), readings(request=request), NOW)
    assert turn.observation.agent.request == request and turn.decision.rule == "lead_restart_request"
    expired = core.step("n0", leading(renewed_ago_s=60), readings(), NOW)
    assert expired.decision.state is State.DEMOTING and expired.memory.state is State.DEMOTING


def test_a_leaders_sleep_and_dcs_requests_end_at_its_lease_deadline():
    renewed = core.Memory(state=State.LEADER, lease_renewed_at_s=100.0, lease_ttl_s=30.0)  # deadline 128 (margin 2)
    assert core.deadline_ahead(renewed, CONFIG, 120.0) == 128.0
    assert core.deadline_ahead(renewed, CONFIG, 128.0) is None  # reached: no longer ahead
    assert core.deadline_ahead(core.Memory(), CONFIG, 120.0) is None  # no lease
    assert core.wake_by_s(renewed, CONFIG, 120.0) == 128.0
    assert core.wake_by_s(replace(renewed, next_due_s=125.0), CONFIG, 120.0) == 125.0  # a scheduled time first
    assert core.wake_by_s(replace(renewed, next_due_s=125.0), None, None) == 125.0  # no settings: the schedule only
    assert core.wake_by_s(replace(renewed, next_due_s=125.0), CONFIG, None) == 125.0  # no clock: the same
    assert core.wake_by_s(core.Memory(), CONFIG, 120.0) is None
    assert core.operation_deadline_s(renewed, CONFIG, 120.0) == 128.0  # before 120 + retry_timeout 10
    assert core.operation_deadline_s(renewed, CONFIG, 110.0) == 120.0  # retry_timeout ends first
    assert core.operation_deadline_s(core.Memory(), CONFIG, 120.0) == 130.0
    assert core.read_deadline_s(renewed, CONFIG, 120.0) == 128.0
    refused = replace(renewed, last_outcome=ActionOutcome(failed=frozenset({"ConfirmFailsafe"})))
    assert core.read_deadline_s(refused, CONFIG, 120.0) == 120.5  # one short try: go read-only now, not at 128
    assert core.read_deadline_s(refused, CONFIG, 127.8) == 128.0  # never past the deadline
    assert core.operation_deadline_s(refused, CONFIG, 120.0) == 120.5


def test_the_dcs_config_key_is_taken_only_where_its_kind_matches():
    local = ClusterConfig()
    assert core.effective_config(local, {"ttl": True}) == local  # a flag is no number
    assert core.effective_config(local, {"pause": 1}) == local  # a number is no flag
    assert core.effective_config(local, {"ttl": 20}).ttl_s == 20  # an int where a float is kept
    assert core.effective_config(local, {"postgresql": {"parameters": "work_mem=8MB"}}) == local


def test_failsafe_is_active_on_a_leader_held_by_its_members_word_or_a_member_pinged_within_ttl():
    leading = core.Memory(State.LEADER, failsafe_active=True)
    assert core.failsafe_is_active(leading, None)
    assert not core.failsafe_is_active(replace(leading, failsafe_active=False), None)
    pinged = observe(config=replace(CONFIG, failsafe_mode=True), agent=agent(failsafe_ping=FailsafePing("n0", NOW - 5)))
    assert core.failsafe_is_active(core.Memory(State.FOLLOWER), pinged)
    stale = evolve(pinged, agent=agent(failsafe_ping=FailsafePing("n0", NOW - 31)))  # past ttl 30
    assert not core.failsafe_is_active(core.Memory(State.FOLLOWER), stale)
