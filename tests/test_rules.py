"""One case per row of the rule table: the state, the observation that should fire the row, where the node
goes, and the actions it emits (PublishMember, the heartbeat appended to every decision, left out).
A final test fails if any row of the table has no case here."""

from __future__ import annotations

import pytest

from fsm import State, decide
from fsm.actions import PublishMember
from fsm.observation import (
    ClusterView,
    DataDir,
    FailoverRequest,
    FailsafePing,
    OperatorRequest,
    PostgresState,
    RequestKind,
    Trigger,
)
from fsm.transitions import RULES
from tests.worlds import (
    CONFIG,
    NOW,
    agent,
    cluster,
    evolve,
    forked_history,
    fresh_node,
    leader_view,
    members,
    observe,
    outcome,
    primary,
    standby,
    stopped,
)

B, F, C, L, D = State.BOOTSTRAP, State.FOLLOWER, State.CANDIDATE, State.LEADER, State.DEMOTING
PAUSED = evolve(CONFIG, pause=True)
FAR_AHEAD = 50_000_000  # the leader's last WAL position when n1 lags 45 MB behind it
FORKED = cluster(members=members(timeline=2), history=forked_history(end_of_tl1=4_000_000))
N1_LEADS_FORKED = cluster("n1", members=members("n1", timeline=2), history=forked_history(end_of_tl1=4_000_000))


RESTART, REINIT = OperatorRequest(RequestKind.RESTART), OperatorRequest(RequestKind.REINITIALIZE)
RESTART_PRIMARY = OperatorRequest(RequestKind.RESTART, role="primary")
LATER = FailoverRequest("n0", "n1", scheduled_at="2030-01-01T10:00:00+00:00", due_s=NOW + 60)
FAILSAFE = evolve(CONFIG, failsafe_mode=True)
ALL_THREE = tuple((name, f"http://{name}:8008/patroni") for name in ("n0", "n1", "n2"))  # the failsafe key
PINGED = FailsafePing("n0", NOW - 3)  # n0's POST /failsafe, accepted 3 s ago


def ahead(name: str, wal: int) -> ClusterView:
    """A leaderless cluster where `name` has published WAL position `wal`."""
    view = cluster(None)
    return evolve(view, members=tuple(evolve(m, wal_position=wal) if m.name == name else m for m in view.members))


# rule name, state, observation, expected next state, expected actions (class names, in order)
CASES = [
    ("boot_paused", B, fresh_node(config=PAUSED), B, ""),
    ("boot_stop_writes", B, observe("n0", None, primary()), D, "Demote"),
    ("boot_dcs_down", B, fresh_node(dcs=None), B, ""),
    ("boot_won_init", B, observe("n1", ClusterView(initialize=""), PostgresState(),
                                 agent=agent(last_outcome=outcome("RaceForInitialize"))), C, "InitDb AcquireLeaderKey"),
    ("boot_foreign_data", B, observe("n1", cluster(), stopped(system_identifier="42")), B, ""),
    ("boot_race_init", B, fresh_node(), B, "RaceForInitialize"),
    ("boot_resume_lead", B, observe("n0", cluster(), stopped()), C, "AcquireLeaderKey"),
    ("boot_clone", B, observe("n1", cluster(), PostgresState()), F, "CloneReplica StartStandby"),
    ("boot_rejoin", B, observe("n1", cluster(), stopped()), F, "StartStandby"),
    ("boot_wait", B, observe("n1", ClusterView(initialize=""), PostgresState()), B, ""),
    ("follow_paused", F, observe(dcs=cluster(None), config=PAUSED), F, ""),
    ("follow_lost_data", F, observe(pg=PostgresState(data_dir=DataDir.BROKEN)), B, ""),
    ("follow_foreign_data", F, observe(pg=standby(system_identifier="42")), B, "StopPostgres"),
    ("follow_stop_writes", F, observe(pg=primary()), D, "Demote"),
    ("follow_dcs_down", F, observe(dcs=None), F, ""),
    ("follow_holds_key", F, observe(dcs=cluster("n1")), C, "AcquireLeaderKey"),
    ("follow_failsafe_leader", F, observe(dcs=cluster(None), config=FAILSAFE, agent=agent(failsafe_ping=PINGED)), F, ""),
    ("follow_peer_primary", F, observe(dcs=evolve(cluster(None), live_primaries=frozenset({"n0"}))), F, ""),
    ("follow_race", F, observe(dcs=cluster(None)), C, "AcquireLeaderKey"),
    ("follow_not_eligible", F, observe(dcs=cluster(None, leader_wal_position=FAR_AHEAD)), F, ""),
    ("follow_defer", F, observe(dcs=ahead("n2", 6_000_000)), F, ""),
    ("follow_refuse_request", F, observe(agent=agent(request=RESTART_PRIMARY)), F, "RefuseRequest"),
    ("follow_reinit", F, observe(agent=agent(request=REINIT)), F, "Reclone StartStandby"),
    ("follow_restart_request", F, observe(agent=agent(request=RESTART)), F, "RestartStandby"),
    ("follow_diverged", F, observe(dcs=FORKED), D, ""),
    ("follow_start", F, observe(pg=stopped()), F, "StartStandby"),
    ("follow_repoint", F, observe(pg=standby(following="n2")), F, "FollowLeader"),
    ("follow_steady", F, observe(), F, ""),
    ("cand_failsafe_leader", C, observe(dcs=cluster("n1"), config=FAILSAFE, agent=agent(0.5, failsafe_ping=PINGED)), F,
     "ReleaseLeaderKey"),
    ("cand_stop_writes", C, observe(pg=primary()), D, "Demote"),
    ("cand_dcs_down", C, observe(dcs=None), F, ""),
    ("cand_init_failed", C, observe("n1", ClusterView(initialize=""), PostgresState()), B, "CancelInitialize"),
    ("cand_won_init", C, observe(dcs=cluster("n1", initialize=""), pg=stopped(), agent=agent(renewed_ago_s=0.5)), L,
     "ArmWatchdog StartPrimary Promote RunCallback"),
    ("cand_won", C, observe(dcs=cluster("n1"), agent=agent(renewed_ago_s=0.5)), L,
     "ArmWatchdog StartPrimary Promote RunCallback"),
    ("cand_unfit", C, observe(dcs=cluster("n1", leader_wal_position=FAR_AHEAD), agent=agent(renewed_ago_s=0.5)), F, "ReleaseLeaderKey"),
    ("cand_refresh_key", C, observe(dcs=cluster("n1")), C, "AcquireLeaderKey"),
    ("cand_lost", C, observe(), F, ""),
    ("cand_retry", C, observe(dcs=cluster(None)), C, "AcquireLeaderKey"),
    ("cand_give_up", C, observe(dcs=cluster(None, leader_wal_position=FAR_AHEAD)), F, ""),
    ("lead_lease_expired", L, leader_view(agent=agent(renewed_ago_s=29)), D, "Demote DisarmWatchdog RunCallback"),
    ("lead_paused", L, leader_view(config=PAUSED), L, "RenewLeaderKey DisarmWatchdog"),
    ("lead_foreign_data", L, leader_view(postgres=stopped(system_identifier="7300000000000000999")), D,
     "Demote ReleaseLeaderKey DisarmWatchdog RunCallback"),
    ("lead_failsafe_refused", L, leader_view(dcs=None, config=FAILSAFE, agent=agent(5, failsafe_view=ALL_THREE,
     last_outcome=outcome(failed="ConfirmFailsafe"))), D, "Demote DisarmWatchdog RunCallback"),
    ("lead_failsafe", L, leader_view(dcs=None, config=FAILSAFE, agent=agent(5, failsafe_view=ALL_THREE)), L,
     "ConfirmFailsafe PingWatchdog"),
    ("lead_retry_renew", L, leader_view(dcs=None, agent=agent(renewed_ago_s=5)), L, "RenewLeaderKey PingWatchdog"),
    ("lead_dcs_down", L, leader_view(dcs=None, agent=agent(renewed_ago_s=20)), D,
     "Demote DisarmWatchdog RunCallback"),
    ("lead_failsafe_retake", L, leader_view(dcs=cluster(None), agent=agent(5, failsafe_active=True)), L,
     "AcquireLeaderKey PingWatchdog"),
    ("lead_lost_key", L, leader_view(dcs=cluster("n2")), D, "Demote DisarmWatchdog RunCallback"),
    ("lead_hand_over", L, leader_view(postgres=stopped(), agent=agent(10, postgres_down_since_s=NOW - 40)), D,
     "Demote ReleaseLeaderKey DisarmWatchdog RunCallback"),
    ("lead_restart", L, leader_view(postgres=stopped(), agent=agent(10, postgres_down_since_s=NOW - 5)), L,
     "RenewLeaderKey PingWatchdog StartPrimary"),
    ("lead_switchover", L, leader_view(dcs=cluster(failover=FailoverRequest("n0", "n1"))), D,
     "Demote ReleaseLeaderKey DisarmWatchdog RunCallback"),
    ("lead_refuse_request", L, leader_view(agent=agent(10, request=REINIT)), L, "RenewLeaderKey PingWatchdog RefuseRequest"),
    ("lead_restart_request", L, leader_view(agent=agent(10, request=RESTART)), L, "RenewLeaderKey PingWatchdog RestartPrimary"),
    ("lead_promote", L, leader_view(postgres=primary(read_only=True)), L, "RenewLeaderKey PingWatchdog Promote"),
    ("lead_await_switchover", L, leader_view(dcs=cluster(failover=LATER)), L,
     "RenewLeaderKey PingWatchdog EnsureReplicationSlots PublishLeaderOptime"),
    ("lead_steady", L, leader_view(), L, "RenewLeaderKey PingWatchdog EnsureReplicationSlots PublishLeaderOptime"),
    ("demote_stop_writes", D, observe("n0", cluster(), primary()), D, "Demote"),
    ("demote_release", D, observe("n0", cluster(), stopped()), D, "ReleaseLeaderKey"),
    ("demote_foreign_data", D, observe("n0", cluster("n1"), stopped(system_identifier="42")), B, ""),
    ("demote_dcs_down", D, observe("n0", None, stopped()), F, ""),
    ("demote_reclone", D, observe("n0", N1_LEADS_FORKED, stopped(can_rewind=False)), B, "Reclone"),
    ("demote_rewind", D, observe("n0", N1_LEADS_FORKED, stopped()), D, "StopPostgres RewindFromLeader StartStandby"),
    ("demote_rejoin", D, observe("n0", cluster("n1"), stopped()), F, "StartStandby"),
    ("shutdown_paused", L, leader_view(config=PAUSED, trigger=Trigger.SHUTDOWN), L, ""),
    ("shutdown_leader", L, leader_view(trigger=Trigger.SHUTDOWN), D,
     "Demote ReleaseLeaderKey DisarmWatchdog RunCallback"),
    ("shutdown_member", F, observe(trigger=Trigger.SHUTDOWN), F, "StopPostgres ReleaseLeaderKey RunCallback"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "state", "observation", "dest", "actions"), CASES, ids=[c[0] for c in CASES])
def test_rule(rule, state, observation, dest, actions):
    decision = decide(state, observation)
    assert decision.rule == rule, decision.why
    assert decision.state is dest
    assert [type(a).__name__ for a in decision.actions if not isinstance(a, PublishMember)] == actions.split()


def test_every_rule_has_a_case():
    assert sorted(r.name for r in RULES) == sorted(c[0] for c in CASES)
