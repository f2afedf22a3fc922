"""Behaviour the issue names, beyond one row at a time: sequences, orderings, and the reasons given."""

from __future__ import annotations

from fsm import State, decide
from fsm.actions import (
    AcquireLeaderKey,
    CloneReplica,
    Demote,
    DemoteMode,
    EnsureReplicationSlots,
    FollowLeader,
    PrepareSyncStandby,
    Promote,
    PublishHistory,
    PublishMember,
    RefuseRequest,
    ReleaseLeaderKey,
    RestartPrimary,
    SetInitializeKey,
    SetSyncStandby,
    StartStandby,
)
from fsm.facts import due, missed
from fsm.lease import lease_deadline_s
from fsm.observation import (
    ClusterView,
    FailoverRequest,
    Member,
    Observation,
    OperatorRequest,
    PostgresState,
    RequestKind,
    SyncState,
    Tags,
    TimelineSwitch,
    Trigger,
)
from fsm.topology import upstream_of
from tests.test_rules import CASES, FAR_AHEAD, N1_LEADS_FORKED, ahead
from tests.worlds import (
    CONFIG,
    NOW,
    SYSID,
    agent,
    cluster,
    evolve,
    forked_history,
    leader_view,
    members,
    observe,
    outcome,
    primary,
    standby,
    stopped,
    with_tags,
)

SYNC = evolve(CONFIG, synchronous_mode=True)


def kinds(decision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def test_decide_is_deterministic():
    for _, state, observation, _, _ in CASES:
        assert decide(state, observation) == decide(state, observation)


def test_why_names_the_facts_with_their_values():
    decision = decide(State.FOLLOWER, observe(dcs=cluster(None, leader_wal_position=FAR_AHEAD)))
    assert decision.rule == "follow_not_eligible"
    assert "lag 45000000 B > maximum_lag_on_failover 1048576 B" in decision.why
    assert "leader_key_free=yes" in decision.why


def test_publish_member_follows_every_decision_while_the_dcs_answers():
    assert decide(State.LEADER, leader_view()).actions[-1] == PublishMember(State.LEADER, "primary")
    assert decide(State.FOLLOWER, observe()).actions[-1] == PublishMember(State.FOLLOWER, "replica")
    assert not any(isinstance(a, PublishMember) for a in decide(State.FOLLOWER, observe(dcs=None)).actions)


def test_bootstrap_winner_initdbs_then_leads():
    claimed = ClusterView(initialize="")
    won = observe("n0", claimed, PostgresState(), agent=agent(last_outcome=outcome("RaceForInitialize")))
    first = decide(State.BOOTSTRAP, won)
    assert (first.state, kinds(first)[:2]) == (State.CANDIDATE, ["InitDb", "AcquireLeaderKey"])
    holding = observe("n0", evolve(claimed, leader=cluster().leader), stopped(), agent=agent(renewed_ago_s=0.2))
    second = decide(State.CANDIDATE, holding)
    assert second.state is State.LEADER and Promote() in second.actions
    running = evolve(holding, postgres=primary())
    third = decide(State.LEADER, running)
    assert SetInitializeKey(SYSID) in third.actions


def test_others_wait_for_a_running_leader_then_clone_from_it():
    claimed = observe("n1", ClusterView(initialize=""), PostgresState())
    assert decide(State.BOOTSTRAP, claimed).rule == "boot_wait"
    leader_starting = cluster(members=tuple(evolve(m, state="starting") for m in members()))
    assert decide(State.BOOTSTRAP, observe("n1", leader_starting, PostgresState())).rule == "boot_wait"
    clone = decide(State.BOOTSTRAP, observe("n1", cluster(), PostgresState()))
    assert CloneReplica(source="n0", methods=("basebackup",)) in clone.actions


def test_a_clone_copies_a_replica_tagged_clonefrom_unless_a_reinitialize_asks_for_the_leader():
    def tagged(state: str = "running") -> ClusterView:
        return cluster(
            members=tuple(evolve(m, tags=Tags(clonefrom=True), state=state) if m.name == "n2" else m for m in members())
        )

    def source(decision) -> str:
        return next(a.source for a in decision.actions if isinstance(a, CloneReplica))

    assert source(decide(State.BOOTSTRAP, observe("n1", tagged(), PostgresState()))) == "n2"
    assert source(decide(State.BOOTSTRAP, observe("n1", tagged("stopped"), PostgresState()))) == "n0"
    reinit = OperatorRequest(RequestKind.REINITIALIZE)
    asked = decide(State.FOLLOWER, observe("n1", tagged(), agent=agent(request=reinit)))
    assert asked.rule == "follow_reinit" and source(asked) == "n2"
    from_leader = OperatorRequest(RequestKind.REINITIALIZE, from_leader=True)
    assert source(decide(State.FOLLOWER, observe("n1", tagged(), agent=agent(request=from_leader)))) == "n0"


def test_a_data_directory_of_another_cluster_is_never_joined():
    foreign = stopped(system_identifier="42")
    decision = decide(State.BOOTSTRAP, observe("n1", cluster(), foreign))
    assert decision.rule == "boot_foreign_data" and kinds(decision) == ["PublishMember"]
    assert "system id 42, cluster '7301234567890123456'" in decision.why


def test_nofailover_node_does_not_race_for_initialize():
    decision = decide(State.BOOTSTRAP, with_tags(observe("n1", ClusterView(), PostgresState()), nofailover=True))
    assert decision.rule == "boot_wait"


def test_follower_re_points_when_the_leader_changes():
    decision = decide(State.FOLLOWER, observe(dcs=cluster("n2"), pg=standby(following="n0")))
    assert FollowLeader(upstream="n2") in decision.actions


def cascade(**tags_of: Tags) -> ClusterView:
    """The default cluster (n0 leads, n1 and n2 replicas) with these members' tags."""
    return cluster(members=tuple(evolve(m, tags=tags_of.get(m.name, m.tags)) for m in members()))


def test_replicatefrom_streams_from_a_running_replica_which_keeps_its_slot():
    view = cascade(n2=Tags(replicatefrom="n1"))
    n2 = with_tags(observe("n2", view, standby(following="n0")), replicatefrom="n1")
    assert FollowLeader(upstream="n1") in decide(State.FOLLOWER, n2).actions
    down = with_tags(observe("n2", view, stopped()), replicatefrom="n1")
    assert StartStandby(upstream="n1") in decide(State.FOLLOWER, down).actions
    steady = with_tags(observe("n2", view, standby(following="n1")), replicatefrom="n1")
    assert decide(State.FOLLOWER, steady).rule == "follow_steady"
    # the leader keeps no slot for n2; n1 keeps one, and drops it once nobody streams from it
    assert EnsureReplicationSlots(members=("n1",)) in decide(State.LEADER, leader_view(dcs=view)).actions
    n1 = decide(State.FOLLOWER, observe("n1", view, standby()))
    assert n1.rule == "follow_steady" and EnsureReplicationSlots(members=("n2",)) in n1.actions
    kept = decide(State.FOLLOWER, observe("n1", view, standby(replication_slots=frozenset({"n2"}))))
    assert not any(isinstance(a, EnsureReplicationSlots) for a in kept.actions)
    left = decide(State.FOLLOWER, observe("n1", cluster(), standby(replication_slots=frozenset({"n2"}))))
    assert EnsureReplicationSlots(members=()) in left.actions
    no_slots = observe("n1", view, standby(), config=evolve(CONFIG, use_slots=False))
    assert not any(isinstance(a, EnsureReplicationSlots) for a in decide(State.FOLLOWER, no_slots).actions)


def test_replicatefrom_falls_back_to_the_leader():
    stopped_n1 = cluster(members=tuple(evolve(m, state="stopped") if m.name == "n1" else m for m in members()))
    cases = {
        "the named member is down": (stopped_n1, "n1"),
        "it is the leader": (cluster(), "n0"),
        "it names itself": (cluster(), "n2"),
        "no such member": (cluster(), "n9"),
        # a cycle of tags would leave both without the leader's WAL
        "a cycle": (cascade(n1=Tags(replicatefrom="n2"), n2=Tags(replicatefrom="n1")), "n1"),
    }
    for what, (view, target) in cases.items():
        n2 = with_tags(observe("n2", view, standby(following=target)), replicatefrom=target)
        decision = decide(State.FOLLOWER, n2)
        assert decision.rule == ("follow_steady" if target == "n0" else "follow_repoint"), what
        assert target == "n0" or FollowLeader(upstream="n0") in decision.actions, what


def test_replicatefrom_follows_chains_and_breaks_longer_cycles():
    four = (*members(), Member("n3", role="replica", wal_position=5_000_000))

    def view(**tags_of: Tags) -> ClusterView:
        return cluster(members=tuple(evolve(m, tags=tags_of.get(m.name, m.tags)) for m in four))

    def upstream(view: ClusterView, name: str) -> str | None:
        return upstream_of(name, view.member(name).tags, view, "n0")

    chain = view(n3=Tags(replicatefrom="n2"), n2=Tags(replicatefrom="n1"))
    assert [upstream(chain, n) for n in ("n1", "n2", "n3")] == ["n0", "n1", "n2"]
    ring = view(n1=Tags(replicatefrom="n2"), n2=Tags(replicatefrom="n3"), n3=Tags(replicatefrom="n1"))
    assert [upstream(ring, n) for n in ("n1", "n2", "n3")] == ["n0", "n0", "n0"]
    # n3 hangs off a ring it is not part of: the ring streams from the leader, n3 from n1
    tail = view(n1=Tags(replicatefrom="n2"), n2=Tags(replicatefrom="n1"), n3=Tags(replicatefrom="n1"))
    assert [upstream(tail, n) for n in ("n1", "n2", "n3")] == ["n0", "n0", "n1"]


def test_the_history_names_each_timelines_new_leader_once():
    tl2 = (TimelineSwitch(1, 4_000_000, "promote"),)
    tl3 = (*tl2, TimelineSwitch(2, 4_500_000, "promote"))
    recorded = TimelineSwitch(1, 4_000_000, "promote", new_leader="n1", at="2026-12-03T10:00:00+00:00")
    history = cluster(history=(recorded,))
    decision = decide(State.LEADER, leader_view(dcs=history, postgres=primary(timeline=3, timeline_history=tl3)))
    published = next(a for a in decision.actions if isinstance(a, PublishHistory))
    assert published.history == (recorded, TimelineSwitch(2, 4_500_000, "promote", new_leader="n0"))
    unknown = decide(State.LEADER, leader_view(postgres=primary(timeline=3, timeline_history=tl3)))
    lines = next(a for a in unknown.actions if isinstance(a, PublishHistory)).history
    assert [line.new_leader for line in lines] == [None, "n0"]  # an older line nobody recorded names nobody


def test_nostream_replays_the_archive_and_gets_no_slot():
    n2 = with_tags(observe("n2", cascade(n2=Tags(nostream=True)), standby(following="n0")), nostream=True)
    assert FollowLeader(upstream=None) in decide(State.FOLLOWER, n2).actions
    steady = evolve(n2, postgres=standby(following=None))
    assert decide(State.FOLLOWER, steady).rule == "follow_steady"
    assert StartStandby(upstream=None) in decide(State.FOLLOWER, evolve(n2, postgres=stopped())).actions
    leader = decide(State.LEADER, leader_view(dcs=cascade(n2=Tags(nostream=True))))
    assert EnsureReplicationSlots(members=("n1",)) in leader.actions


def test_tags_can_forbid_promotion():
    free = observe(dcs=cluster(None))
    for tags in ({"nofailover": True}, {"failover_priority": 0}):
        decision = decide(State.FOLLOWER, with_tags(free, **tags))
        assert decision.rule == "follow_not_eligible", decision.why
        assert "tags forbid promotion" in decision.why


def test_the_member_with_more_wal_goes_first():
    assert decide(State.FOLLOWER, observe(dcs=ahead("n2", 6_000_000))).rule == "follow_defer"
    assert decide(State.FOLLOWER, observe(dcs=ahead("n2", 4_000_000))).rule == "follow_race"


def test_on_equal_wal_the_higher_failover_priority_goes_first():
    view = cluster(None)
    view = evolve(
        view,
        members=tuple(
            evolve(m, tags=evolve(m.tags, failover_priority=5)) if m.name == "n2" else m for m in view.members
        ),
    )
    decision = decide(State.FOLLOWER, observe(dcs=view))
    assert decision.rule == "follow_defer" and "n2 is ahead" in decision.why


def test_an_unpromotable_member_ahead_does_not_block_the_race():
    view = ahead("n2", 9_000_000)
    view = evolve(view, members=tuple(evolve(m, state="stopped") if m.name == "n2" else m for m in view.members))
    assert decide(State.FOLLOWER, observe(dcs=view)).rule == "follow_race"


def test_synchronous_mode_promotes_only_the_sync_standby():
    view = cluster(None, sync=SyncState(leader="n0", sync_standby="n2"))
    assert decide(State.FOLLOWER, observe(dcs=view, config=SYNC)).rule == "follow_not_eligible"
    assert decide(State.FOLLOWER, observe("n2", view, config=SYNC)).rule == "follow_race"
    # The old leader n0 is gone; n2 published less WAL than n1, but n1 may not be promoted, so n2 is first in line.
    behind = evolve(
        view,
        members=tuple(evolve(m, wal_position=4_900_000) if m.name == "n2" else m for m in view.members[1:]),
    )
    assert decide(State.FOLLOWER, observe("n2", behind, standby(wal=4_900_000), config=SYNC)).rule == "follow_race"


def test_synchronous_mode_lets_the_sync_keys_own_leader_back_and_nobody_else_when_it_named_no_standby():
    """A leader that ran without a sync standby acknowledged commits alone: only it may lead again."""
    view = cluster(None, sync=SyncState(leader="n0", sync_standby=None))
    assert decide(State.FOLLOWER, observe("n1", view, config=SYNC)).rule == "follow_not_eligible"
    assert decide(State.FOLLOWER, observe("n0", view, config=SYNC)).rule == "follow_race"


def test_candidate_never_promotes_without_the_key():
    for view in (cluster(None), cluster("n2")):
        decision = decide(State.CANDIDATE, observe(dcs=view, agent=agent(renewed_ago_s=0.5)))
        assert Promote() not in decision.actions
    stale_lease = decide(State.CANDIDATE, observe(dcs=cluster("n1"), agent=agent(renewed_ago_s=40)))
    assert stale_lease.rule == "cand_refresh_key" and Promote() not in stale_lease.actions


def test_leader_cut_off_from_the_dcs_is_read_only_before_its_deadline():
    """Loop the leader through a DCS outage that starts just after its last successful renew: each loop waits
    loop_wait, then a renew attempt fails after retry_timeout and the next decision comes at once."""
    renewed_at = NOW
    deadline = lease_deadline_s(renewed_at, CONFIG)
    now, state = renewed_at + CONFIG.retry_timeout_s + CONFIG.loop_wait_s, State.LEADER
    while state is State.LEADER:
        o = leader_view(dcs=None, now_s=now, agent=evolve(agent(), lease_renewed_at_s=renewed_at))
        decision = decide(state, o)
        state = decision.state
        if state is State.LEADER:
            assert decision.actions[0].__class__.__name__ == "RenewLeaderKey"
            now += CONFIG.retry_timeout_s
    assert decision.rule in {"lead_dcs_down", "lead_lease_expired"}
    assert decision.actions[0] == Demote(DemoteMode.READ_ONLY) or decision.actions[0] == Demote(DemoteMode.IMMEDIATE)
    assert now < deadline <= renewed_at + CONFIG.ttl_s


def test_switchover_hands_over_to_the_named_candidate():
    request = FailoverRequest(leader="n0", candidate="n1")
    leaving = decide(State.LEADER, leader_view(dcs=cluster(failover=request)))
    assert leaving.actions[:2] == (Demote(DemoteMode.GRACEFUL), ReleaseLeaderKey())
    after = cluster(None, failover=request, members=ahead("n2", 6_000_000).members)
    assert decide(State.FOLLOWER, observe("n1", after)).rule == "follow_race"
    assert decide(State.FOLLOWER, observe("n2", after, standby(wal=6_000_000))).rule == "follow_defer"
    new_leader = observe("n1", cluster("n1", failover=request), primary(), agent=agent(renewed_ago_s=1))
    assert "ClearSwitchoverRequest" in kinds(decide(State.LEADER, new_leader))


def test_switchover_to_an_unfit_target_is_refused_and_cleared():
    lagging = cluster(
        failover=FailoverRequest("n0", "n2"),
        members=tuple(evolve(m, wal_position=100) if m.name == "n2" else m for m in members()),
    )
    decision = decide(State.LEADER, leader_view(dcs=lagging))
    assert decision.rule == "lead_steady" and "ClearSwitchoverRequest" in kinds(decision)
    assert "switchover_stale=yes (target n2 is missing, lagging" in decision.why


def test_crashed_primary_is_restarted_once_then_handed_over():
    down = leader_view(postgres=stopped(), agent=agent(10, postgres_down_since_s=NOW - 3))
    assert decide(State.LEADER, down).rule == "lead_restart"
    failed = evolve(down, agent=evolve(down.agent, last_outcome=outcome(failed="StartPrimary")))
    decision = decide(State.LEADER, failed)
    assert decision.rule == "lead_hand_over" and "the restart of the primary failed" in decision.why


def test_writes_stop_before_the_key_is_released_in_every_decision():
    for _, state, observation, _, _ in CASES:
        names = kinds(decide(state, observation))
        if "ReleaseLeaderKey" in names and "Demote" in names:
            assert names.index("Demote") < names.index("ReleaseLeaderKey")
        if "Promote" in names:
            assert "ArmWatchdog" in names[: names.index("Promote")] or "RenewLeaderKey" in names


def test_pause_keeps_the_leader_and_blocks_failover():
    paused = evolve(CONFIG, pause=True)
    assert kinds(decide(State.LEADER, leader_view(config=paused)))[0] == "RenewLeaderKey"
    follower = decide(State.FOLLOWER, observe(dcs=cluster(None), config=paused))
    assert not any(isinstance(a, AcquireLeaderKey) for a in follower.actions)
    crashed = decide(State.LEADER, leader_view(config=paused, postgres=stopped()))
    assert "StartPrimary" not in kinds(crashed)


def sync_leader(key: SyncState | None, setting: frozenset[str] = frozenset(), **postgres: object):
    """n0 leading in synchronous mode with the sync key `key` and synchronous_standby_names `setting`."""
    streaming = postgres.pop("streaming_replicas", frozenset({"n1", "n2"}))
    assert isinstance(streaming, frozenset)
    pg = primary(
        synchronous_standby_names=setting, streaming_replicas=streaming, sync_replicas=setting & streaming, **postgres
    )
    return leader_view(config=SYNC, dcs=cluster(sync=key), postgres=pg)


def sync_action(decision) -> SetSyncStandby | None:
    return next((a for a in decision.actions if isinstance(a, SetSyncStandby)), None)


def test_leader_names_a_streaming_sync_standby_claiming_the_key_first():
    unclaimed = decide(State.LEADER, sync_leader(None))
    assert sync_action(unclaimed) == SetSyncStandby(name="n1", clear_first=True)
    mine = decide(State.LEADER, sync_leader(SyncState("n0", None)))
    assert sync_action(mine) == SetSyncStandby(name="n1", clear_first=False)
    settled = decide(State.LEADER, sync_leader(SyncState("n0", "n2"), frozenset({"n2"})))
    assert sync_action(settled) is None
    inherited = decide(State.LEADER, sync_leader(SyncState("n1", "n2")))
    # rewritten under this leader's name, and the key first names nobody: n1 may not be promoted meanwhile
    assert sync_action(inherited) == SetSyncStandby(name="n2", clear_first=True)
    off = decide(State.LEADER, leader_view(dcs=cluster(sync=SyncState("n0", "n2"))))
    assert sync_action(off) == SetSyncStandby(name=None)


def test_a_setting_that_disagrees_with_the_key_is_repaired():
    """The key names n2 but Postgres waits for nobody (a read-only restart dropped the setting): stale."""
    lost = decide(State.LEADER, sync_leader(SyncState("n0", "n2")))
    assert sync_action(lost) == SetSyncStandby(name="n2", clear_first=False)
    other = decide(State.LEADER, sync_leader(SyncState("n0", "n2"), frozenset({"n1"})))
    assert sync_action(other) == SetSyncStandby(name="n2", clear_first=False)


def test_replacing_the_sync_standby_clears_the_key_first():
    gone = frozenset({"n1"})  # n2, the key's standby, no longer streams
    decision = decide(State.LEADER, sync_leader(SyncState("n0", "n2"), frozenset({"n2"}), streaming_replicas=gone))
    assert sync_action(decision) == SetSyncStandby(name="n1", clear_first=True)


def test_the_keys_standby_in_sync_state_stays_while_its_member_key_is_missing():
    """After a DCS outage the standby's member key may not be back yet; Postgres still holds it in sync state."""
    view = cluster(sync=SyncState("n0", "n2"), members=tuple(m for m in members() if m.name != "n2"))
    pg = primary(synchronous_standby_names=frozenset({"n2"}), sync_replicas=frozenset({"n2"}))
    decision = decide(State.LEADER, leader_view(config=SYNC, dcs=view, postgres=pg))
    assert sync_action(decision) is None, decision.why


def test_nobody_streaming_names_nobody_and_a_dangling_setting_is_cleared():
    alone = sync_leader(SyncState("n0", None), frozenset({"n1"}), streaming_replicas=frozenset())
    decision = decide(State.LEADER, alone)
    assert sync_action(decision) == SetSyncStandby(name=None)


def test_sync_standby_is_named_after_the_cluster_keys_are_published():
    """A sync standby that is not yet sync fails SetSyncStandby and stops the turn: history goes out before it."""
    decision = decide(State.LEADER, sync_leader(None))
    names = kinds(decision)
    assert names.index("PublishLeaderOptime") < names.index("SetSyncStandby")


def test_writes_resume_only_with_the_sync_setting_matching_the_key():
    """In synchronous mode every row that makes Postgres writable prepares synchronous_standby_names first."""
    checked = set()
    for _, state, observation, _, _ in CASES:
        decision = decide(state, evolve(observation, config=evolve(observation.config, synchronous_mode=True)))
        names = kinds(decision)
        for writes in ("StartPrimary", "Promote"):
            if writes in names:
                assert "PrepareSyncStandby" in names[: names.index(writes)], decision.rule
                checked.add(decision.rule)
    assert {"cand_won", "cand_won_init", "lead_restart", "lead_promote"} <= checked


def test_prepare_keeps_the_keys_standby_only_under_this_leader():
    def prepared(key: SyncState | None) -> PrepareSyncStandby:
        obs = observe("n1", cluster(None, sync=key), standby(), agent=agent(renewed_ago_s=0.2), config=SYNC)
        decision = decide(State.CANDIDATE, evolve(obs, dcs=evolve(obs.dcs, leader=cluster("n1").leader)))
        assert decision.rule == "cand_won", decision.why
        return next(a for a in decision.actions if isinstance(a, PrepareSyncStandby))

    assert prepared(SyncState("n1", "n2")) == PrepareSyncStandby(name="n2")  # this node's key: n2 has every commit
    assert prepared(SyncState("n0", "n1")) == PrepareSyncStandby(name=None)  # the old leader's key: claim it
    assert prepared(None) == PrepareSyncStandby(name=None)


def test_timeline_fork_decides_between_follow_and_rewind():
    leader_on_tl2 = cluster(members=members(timeline=2))
    # The leader has not published when timeline 1 ended: wait rather than rewind on a guess.
    assert decide(State.FOLLOWER, observe(dcs=leader_on_tl2)).rule == "follow_steady"
    fork_after_my_wal = evolve(leader_on_tl2, history=forked_history(end_of_tl1=6_000_000))
    assert decide(State.FOLLOWER, observe(dcs=fork_after_my_wal)).rule == "follow_steady"
    fork_before_my_wal = evolve(leader_on_tl2, history=forked_history(end_of_tl1=4_000_000))
    decision = decide(State.FOLLOWER, observe(dcs=fork_before_my_wal))
    assert decision.rule == "follow_diverged"
    assert "my WAL 5000000 is past the end of timeline 1 at 4000000" in decision.why


def test_a_failed_rewind_leads_to_a_reclone_not_to_endless_restarts():
    """demote_rewind stays in demoting, so the next loop sees the outcome: rejoin if it worked, re-clone if not."""
    forked = cluster("n1", members=members("n1", timeline=2), history=forked_history(end_of_tl1=4_000_000))
    first = decide(State.DEMOTING, observe("n0", forked, stopped()))
    assert first.rule == "demote_rewind" and first.state is State.DEMOTING
    failed = observe("n0", forked, stopped(), agent=agent(last_outcome=outcome("StopPostgres", "RewindFromLeader")))
    assert decide(State.DEMOTING, failed).rule == "demote_reclone"


def test_why_lists_each_guard_as_name_yes_or_no_with_its_note_and_says_so_when_nothing_is_guarded():
    eligible = decide(State.FOLLOWER, observe(dcs=cluster(None, leader_wal_position=FAR_AHEAD)))
    assert eligible.why == (
        "leader_key_free=yes (leader key holder: none); "
        "eligible=no (lag 45000000 B > maximum_lag_on_failover 1048576 B)"
    )
    down = decide(State.FOLLOWER, observe(pg=stopped()))
    assert (down.rule, down.why) == ("follow_start", "postgres_running=no (not running)")
    shutdown = decide(State.FOLLOWER, observe(trigger=Trigger.SHUTDOWN))
    assert (shutdown.rule, shutdown.why) == ("shutdown_member", "unconditional")


def test_the_leader_keeps_a_slot_for_every_other_member():
    decision = decide(State.LEADER, leader_view())
    assert EnsureReplicationSlots(members=("n1", "n2")) in decision.actions
    as_n2 = decide(State.LEADER, leader_view(name="n2", dcs=cluster("n2")))
    assert EnsureReplicationSlots(members=("n0", "n1")) in as_n2.actions


def test_an_operator_restart_of_the_primary_carries_its_timeout():
    request = OperatorRequest(RequestKind.RESTART, timeout_s=45)
    decision = decide(State.LEADER, leader_view(agent=agent(10, request=request)))
    assert decision.rule == "lead_restart_request"
    assert RestartPrimary(timeout_s=45) in decision.actions
    no_timeout = decide(State.LEADER, leader_view(agent=agent(10, request=OperatorRequest(RequestKind.RESTART))))
    assert RestartPrimary(timeout_s=None) in no_timeout.actions


def test_a_refused_request_is_answered_with_the_reason():
    reinit = OperatorRequest(RequestKind.REINITIALIZE)
    leader = decide(State.LEADER, leader_view(agent=agent(10, request=reinit)))
    assert RefuseRequest("this node is the leader: only a replica can be reinitialized") in leader.actions
    restart_primary = OperatorRequest(RequestKind.RESTART, role="primary")
    replica = decide(State.FOLLOWER, observe(agent=agent(request=restart_primary)))
    assert replica.rule == "follow_refuse_request"
    assert RefuseRequest("restart is for a primary, this node is a replica") in replica.actions


def test_a_leader_that_cannot_read_its_system_identifier_writes_none_into_the_initialize_key():
    unread = leader_view(dcs=cluster(initialize=""), postgres=primary(system_identifier=None))
    decision = decide(State.LEADER, unread)
    assert decision.rule == "lead_steady"
    assert SetInitializeKey(system_identifier="") in decision.actions  # still "unset": never a made-up identifier


# --- scheduled requests: due is a predicate over the observation's clock ------------------------------------------


def test_due_and_missed_are_predicates_on_the_drivers_clock():
    assert not due(None, NOW) and not due(NOW + 0.001, NOW) and due(NOW, NOW) and due(NOW - 5, NOW)
    loop_wait = CONFIG.loop_wait_s  # 10 s: Patroni drops a scheduled action missed by more than 1.5 x loop_wait
    assert missed(NOW - 15, NOW, loop_wait) is None and missed(NOW - 15.5, NOW, loop_wait) == 15.5


def test_a_scheduled_restart_runs_at_its_time_through_the_rows_of_an_immediate_one():
    def restart_at(at_s: float, role: str | None = None, **changes: object) -> OperatorRequest:
        return OperatorRequest(RequestKind.RESTART, role=role, at_s=at_s, **changes)

    early = decide(State.FOLLOWER, observe(agent=agent(scheduled=restart_at(NOW + 1))))
    assert early.rule == "follow_steady"
    on_time = decide(State.FOLLOWER, observe(agent=agent(scheduled=restart_at(NOW))))
    assert on_time.rule == "follow_restart_request" and "scheduled_restart_due=yes" in on_time.why
    leader = decide(State.LEADER, leader_view(agent=agent(10, scheduled=restart_at(NOW - 3, timeout_s=45.0))))
    assert leader.rule == "lead_restart_request"
    assert kinds(leader)[:3] == ["RenewLeaderKey", "PingWatchdog", "RestartPrimary"]
    assert leader.actions[2] == RestartPrimary(timeout_s=45.0)  # the scheduled request's own options
    # its conditions are judged when it is due: the node is no longer a replica by then
    wrong_role = decide(State.LEADER, leader_view(agent=agent(10, scheduled=restart_at(NOW, "replica"))))
    assert wrong_role.rule == "lead_refuse_request" and "restart is for a replica" in wrong_role.why
    late = decide(State.FOLLOWER, observe(agent=agent(scheduled=restart_at(NOW - 16))))
    assert late.rule == "follow_refuse_request" and "missed its time by 16 s" in late.why
    # a request made now goes first; the scheduled one waits for a later turn
    both = observe(agent=agent(request=OperatorRequest(RequestKind.REINITIALIZE), scheduled=restart_at(NOW)))
    assert decide(State.FOLLOWER, both).rule == "follow_reinit"


def test_a_scheduled_switchover_waits_for_its_time_then_hands_over():
    def scheduled(due_s: float | None) -> Observation:
        request = FailoverRequest("n0", "n1", scheduled_at="2030-01-01T10:00:00+00:00", due_s=due_s)
        return leader_view(dcs=cluster(failover=request))

    waiting = decide(State.LEADER, scheduled(NOW + 0.5))
    assert waiting.rule == "lead_await_switchover" and "due at 1000.5 s, now 1000 s" in waiting.why
    untold = leader_view(dcs=cluster(failover=FailoverRequest("n0", "n1", due_s=NOW + 0.5)))  # a time, no text
    assert "switchover scheduled at ?: due at 1000.5 s" in decide(State.LEADER, untold).why
    assert "ClearSwitchoverRequest" not in kinds(waiting) and "RenewLeaderKey" in kinds(waiting)
    assert decide(State.LEADER, scheduled(NOW)).rule == "lead_switchover"
    for dropped in (scheduled(None), scheduled(NOW - 16)):  # an unreadable time, or one missed by > 1.5 x loop_wait
        decision = decide(State.LEADER, dropped)
        assert decision.rule == "lead_steady" and "ClearSwitchoverRequest" in kinds(decision), decision.why
    # a scheduled key for a former leader (n2 took over since): not this leader's to wait for, cleared at once
    for_another = FailoverRequest("n2", "n1", scheduled_at="2030-01-01T10:00:00+00:00", due_s=NOW + 60)
    decision = decide(State.LEADER, leader_view(dcs=cluster(failover=for_another)))
    assert decision.rule == "lead_steady" and "ClearSwitchoverRequest" in kinds(decision), decision.why


def test_wal_exactly_at_the_end_of_the_old_timeline_has_not_diverged():
    """pg_rewind is needed only for WAL past the switch point; a node that stopped exactly there just follows."""
    at_switch = decide(State.DEMOTING, observe("n0", N1_LEADS_FORKED, stopped(wal_written=4_000_000)))
    assert (at_switch.rule, at_switch.state) == ("demote_rejoin", State.FOLLOWER)
    assert "diverged=no (my WAL 4000000 <= end of timeline 1 at 4000000)" in at_switch.why
    past = decide(State.DEMOTING, observe("n0", N1_LEADS_FORKED, stopped(wal_written=4_000_001)))
    assert past.rule == "demote_rewind"


def test_an_unknown_leader_wal_position_holds_no_lag_against_anyone():
    unknown = decide(State.FOLLOWER, observe(dcs=cluster(None, leader_wal_position=None), pg=standby(wal=0)))
    assert unknown.rule != "follow_not_eligible", unknown.why
    at_limit = cluster(None, leader_wal_position=5_000_000 + CONFIG.maximum_lag_on_failover_bytes)
    assert decide(State.FOLLOWER, observe(dcs=at_limit)).rule != "follow_not_eligible"  # a lag equal to the limit
    past_limit = cluster(None, leader_wal_position=5_000_001 + CONFIG.maximum_lag_on_failover_bytes)
    assert decide(State.FOLLOWER, observe(dcs=past_limit)).rule == "follow_not_eligible"
