"""Each named scenario's outcome, the simulator's determinism, and its command line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fsm import State
from fsm.actions import ConfirmFailsafe
from fsm.node import failsafe_timeout_s
from fsm.observation import ClusterConfig, FailsafePing
from model.effects import ONE_WAY_S, accept_failsafe, plan_action
from model.faults import Fault, inject
from model.invariants import liveness_bound_s
from model.scenarios import SCENARIOS, SYNC_RANDOM_SEEDS
from model.simulate import Result, main, render_text, simulate
from model.world import Settings, World

TTL, LOOP_WAIT = 30.0, 10.0


def run(name: str, seed: int = 1, **settings: object) -> Result:
    return simulate(SCENARIOS[name], Settings(**settings), seed)  # type: ignore[arg-type]


def target_of(result: Result, kind: str) -> str:
    """The node a fault of `kind` hit, from the trace."""
    return next(f["node"] for f in result.world.trace.faults if f["label"].startswith(kind))


def rules_of(result: Result, node: str) -> list[str]:
    return [e["rule"] for e in result.world.trace.events if e["kind"] == "decision" and e["node"] == node]


def promotions_between(result: Result, start: float, end: float) -> list[dict]:
    return [
        e
        for e in result.world.trace.events
        if e["kind"] == "note" and e["text"].startswith("promoted") and start < e["t"] < end
    ]


def test_leader_crash_fails_over_within_the_lease_and_the_old_leader_rejoins():
    result = run("leader-crash")
    assert result.ok, result.summary["violations"]
    crashed = target_of(result, "crash")
    [failover] = result.summary["failovers"]
    assert failover["from"] == crashed and failover["to"] != crashed
    assert TTL - LOOP_WAIT <= failover["duration_s"] <= TTL + LOOP_WAIT
    assert result.world.nodes[crashed].state is State.FOLLOWER


def test_leader_crash_on_zookeeper_waits_for_the_session_to_expire():
    result = run("leader-crash", dcs_kind="zookeeper")
    assert result.ok
    [failover] = result.summary["failovers"]
    assert TTL <= failover["duration_s"] <= TTL + 2


def test_postgres_that_will_not_restart_is_handed_over_after_one_try():
    result = run("leader-postgres-crash")
    assert result.ok
    old = target_of(result, "postgres_broken")
    rules = rules_of(result, old)
    assert rules.index("lead_restart") < rules.index("lead_hand_over")
    [failover] = result.summary["failovers"]
    assert failover["to"] != old and failover["duration_s"] < LOOP_WAIT


def test_partitioned_leader_goes_read_only_before_its_lease_ends_and_is_replaced():
    result = run("leader-partition")
    assert result.ok
    old = target_of(result, "partition")
    demoted = next(e for e in result.world.trace.events if e.get("rule") == "lead_dcs_down" and e["node"] == old)
    assert demoted["t"] - 60 < TTL
    assert result.summary["final_leader"] not in (None, old)


def test_dcs_outage_makes_the_leader_read_only_within_ttl_and_a_leader_returns():
    result = run("dcs-outage")
    assert result.ok
    demoted = next(e for e in result.world.trace.events if e.get("rule") == "lead_dcs_down")
    assert 0 < demoted["t"] - 60 < TTL
    assert result.summary["final_leader"] is not None


def test_a_lagging_replica_is_never_promoted():
    result = run("lagging-replica")
    assert result.ok
    crashed = target_of(result, "crash")
    assert promotions_between(result, 60, 300) == []
    assert any("lag" in e.get("why", "") and e.get("rule") == "follow_not_eligible" for e in result.world.trace.events)
    assert result.summary["final_leader"] == crashed  # only the old leader has all the WAL


def test_switchover_hands_over_to_the_named_replica_without_losing_commits():
    result = run("switchover")
    assert result.ok
    target = target_of(result, "switchover")
    [failover] = result.summary["failovers"]
    assert failover["to"] == target and failover["duration_s"] < 5
    assert result.summary["final_leader"] == target
    assert result.summary["acked_lost_tx"] == 0


def test_sync_failover_promotes_the_sync_standby_and_loses_no_acknowledged_commit():
    result = run("sync-failover")
    assert result.ok
    assert result.summary["acked_lost_tx"] == 0
    assert result.summary["failovers"]


def test_agent_pause_without_watchdog_shows_the_split_brain(capsys):
    result = run("agent-pause")
    assert result.summary["violations"][0]["invariant"] == "no_split_brain"
    assert main(["--scenario", "agent-pause", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION no_split_brain" in out and "reproduce: python -m model.simulate" in out


def test_agent_pause_with_watchdog_fences_postgres():
    result = run("agent-pause-watchdog")
    assert result.ok
    paused = target_of(result, "pause")
    assert any(
        e.get("text", "").startswith("watchdog fired") and e["node"] == paused for e in result.world.trace.events
    )


def test_rejoin_after_failover_rewinds_the_old_leader():
    result = run("rejoin-after-failover")
    assert result.ok
    old = target_of(result, "crash")
    assert "demote_rewind" in rules_of(result, old)
    node = result.world.nodes[old]
    assert node.state is State.FOLLOWER and node.pg.streaming_from == result.summary["final_leader"]


def test_flapping_network_never_yields_two_writers_and_ends_with_a_leader():
    result = run("flapping-network")
    assert result.ok
    assert result.summary["final_leader"] is not None


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.startswith("regression-")])
def test_regression_scenarios_keep_every_invariant(scenario):
    result = run(scenario, seed=SCENARIOS[scenario].seed)
    assert result.ok, render_text(result)


@pytest.mark.parametrize("seed", range(1, 21))
def test_random_fault_schedules_keep_every_invariant(seed):
    result = run("random", seed=seed)
    assert result.ok, render_text(result)


SYNC_CAMPAIGN_SEEDS = 500  # per store: the campaign that found issue 18's seeds ran 1000; the rest are regressions
SYNC_CHUNK = 50


@pytest.mark.parametrize("dcs_kind", ["etcd", "zookeeper"])
@pytest.mark.parametrize("first", range(1, SYNC_CAMPAIGN_SEEDS + 1, SYNC_CHUNK))
def test_random_fault_schedules_in_synchronous_mode_keep_every_invariant(dcs_kind, first):
    settings = Settings(config=ClusterConfig(synchronous_mode=True), dcs_kind=dcs_kind)
    for seed in range(first, first + SYNC_CHUNK):
        result = simulate(SCENARIOS["random"], settings, seed)
        assert result.ok, f"seed {seed} on {dcs_kind}:\n" + render_text(result)


def test_every_seed_that_lost_sync_commits_is_a_regression_scenario():
    replayed = {s.seed for name, s in SCENARIOS.items() if name.startswith("regression-sync-random-")}
    assert replayed == set(SYNC_RANDOM_SEEDS)
    assert all(SCENARIOS[f"regression-sync-random-{seed}"].config == {"synchronous_mode": True} for seed in replayed)


def test_the_sync_keys_standby_must_hold_every_acknowledged_commit():
    """The invariant itself: a leader acknowledging commits its sync-key standby lacks is caught at once."""
    world = World(Settings(config=ClusterConfig(synchronous_mode=True)), seed=1)
    world.run(60.0)
    leader = world.serving_primary()
    assert leader is not None and world.dcs.get("sync", world.t).sync_standby is not None
    leader.pg.sync_standby = None  # what the read-only restart did to synchronous_standby_names
    world.run(61.0)
    assert world.trace.violations[0]["invariant"] == "sync_durability"
    assert "which lacks" in world.trace.violations[0]["detail"]


def test_a_leader_that_names_no_sync_standby_while_one_streams_is_caught(monkeypatch: pytest.MonkeyPatch):
    """Invariant 8 (sync_named), which the held-out report needed: a leader whose sync key names nobody (as after a
    DCS outage) and that never names a streaming standby again broke no other invariant, nor the explorer."""
    import fsm.facts

    original = fsm.facts._best_sync_standby

    def only_the_keys_standby(obs):  # the rows keep a standby the key names, never pick a new one
        best = original(obs)
        current = obs.dcs.sync.sync_standby if obs.dcs and obs.dcs.sync else None
        return best if best == current else None

    monkeypatch.setattr(fsm.facts, "_best_sync_standby", only_the_keys_standby)
    result = run("regression-sync-named-after-outage")
    violation = result.summary["violations"][0]
    assert violation["invariant"] == "sync_named" and "names no synchronous standby" in violation["detail"]
    assert violation["t"] < 60.0  # PrepareSyncStandby's key {leader, nobody} at the bootstrap already


def test_a_dead_agents_fence_still_fires_but_a_dead_hosts_does_not():
    world = World(Settings(), seed=1)
    world.run(60.0)
    leader = world.serving_primary()
    assert leader is not None and leader.watchdog_deadline is not None
    deadline = leader.watchdog_deadline
    world.kill(leader, "agent died")  # Postgres runs on, and so does the fence process
    assert leader.pg.running and leader.orphan_fence_deadline == deadline
    world.run(deadline + 0.01)
    assert not leader.pg.running and "a dead agent's fence fired" in "\n".join(world.trace.lines)

    other = World(Settings(), seed=1)
    other.run(60.0)
    host = other.serving_primary()
    assert host is not None
    other.kill(host, "crashed", host=True)
    assert host.orphan_fence_deadline is None


def test_a_heal_voided_by_a_fault_stays_void_when_another_heal_shares_its_instant():
    world = World(Settings(), seed=1)
    world.run(60.0)
    checker = world.checker
    checker.healed()  # heal ...
    for node in world.nodes.values():  # ... a fault at the same instant freezes every agent for a while ...
        node.paused_until = world.t + 200.0
    checker.fault_injected()
    checker.healed()  # ... and a second heal, still at the same instant, promises liveness after the thaw only
    world.run(world.t + liveness_bound_s(world) + 1)
    assert not world.trace.violations, world.trace.violations  # the first heal's check must not come back


def test_operator_restarts_and_reinitialize_are_rows_and_the_leader_keeps_its_key():
    result = run("operator-restarts")
    assert result.ok, render_text(result)
    leader = target_of(result, "restart_request")
    assert "lead_restart_request" in rules_of(result, leader)
    replica = target_of(result, "reinit_request")
    assert {"follow_restart_request", "follow_reinit"} <= set(rules_of(result, replica))
    assert result.summary["promotions"] == 0 and result.summary["final_leader"] == leader


def test_liveness_bound_is_checked_after_heal():
    result = run("leader-crash")
    assert result.world.checker.healed_at == 300
    assert liveness_bound_s(result.world) < 600 - 300


def test_same_seed_same_output_and_seeds_differ():
    assert render_text(run("random", seed=5)) == render_text(run("random", seed=5))
    assert render_text(run("random", seed=5)) != render_text(run("random", seed=6))


def test_every_scenario_is_listed(capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(SCENARIOS)


def test_json_and_svg_outputs(tmp_path, capsys):
    svg = tmp_path / "run.svg"
    assert main(["--scenario", "switchover", "--format", "json", "--svg", str(svg)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["summary"]["final_leader"] and document["events"]
    assert "<svg" in svg.read_text() and "leader key" in svg.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "meteor-strike"], "invalid choice: 'meteor-strike' (choose from"),
        (["--ttl", "20"], "exceeds ttl (20 s)"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--ttl", "-1"], "ttl_s must not be negative"),
    ],
)
def test_bad_usage_exits_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


def test_campaign_prints_a_summary_table(capsys):
    assert main(["--scenario", "switchover", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 runs of switchover" in out and "violations" in out


@pytest.mark.parametrize("dcs_kind", ["etcd", "zookeeper"])
def test_without_the_watchdog_only_agent_pauses_break_an_invariant(dcs_kind):
    """The rules alone keep every invariant under every fault but one: an agent frozen past its lease."""
    for seed in range(1, 41):
        result = simulate(SCENARIOS["random"], Settings(watchdog=False, dcs_kind=dcs_kind), seed)
        if not result.ok:
            assert any(f["label"].startswith("pause") for f in result.world.trace.faults), render_text(result)


# --- timings the real cluster confirms (bench/reality.py): the model wakes and retries as the agent does ----------


def _between_turns(seed: int = 1) -> tuple[World, str]:
    """A bootstrapped cluster (loop_wait 10) just after the leader ended a turn: its next one is loop_wait away."""
    world = World(Settings(), seed=seed)
    world.run(60.0)
    leader = world.dcs.get("leader", world.t)
    node, version = world.nodes[leader], world.dcs.keys["leader"].version
    while world.dcs.keys["leader"].version == version or node.acting:  # the renew, then the rest of the turn
        assert world.t < 60.0 + 2 * LOOP_WAIT, "the leader took no turn"
        world.run(world.t + 0.001)
    return world, leader


def _writable_again(world: World, name: str, limit_s: float) -> float:
    start = world.t
    while not world.nodes[name].pg.writable:
        assert world.t - start < limit_s, f"{name} not writable within {limit_s} s"
        world.run(world.t + 0.001)
    return world.t - start


def test_a_postmaster_crash_wakes_the_leader_which_restarts_it_at_once():
    world, leader = _between_turns()
    inject(world, Fault(world.t, "postgres_crash", leader))
    assert not world.nodes[leader].pg.writable
    # the postmaster watch ends the sleep: read, renew, start (not the loop_wait of 10 s)
    assert _writable_again(world, leader, limit_s=0.5) < 0.5
    assert "lead_restart" in rules_of_world(world, leader)


def test_a_switchover_request_wakes_the_leader():
    world, leader = _between_turns()
    candidate = next(name for name in world.nodes if name != leader)
    inject(world, Fault(world.t, "switchover", candidate))
    assert _writable_again(world, candidate, limit_s=1.0) < 1.0  # not after the leader's next loop, 10 s away


def test_a_read_the_dcs_answers_on_a_retry_costs_no_turn_without_a_view():
    world, leader = _between_turns()
    node = world.nodes[leader]
    world.run(world.t + LOOP_WAIT - 0.01)  # just before the leader's next turn reads
    inject(world, Fault(world.t, "dcs_down", "all", duration_s=1.0))
    world.run(world.t + 1.0 + 2.0)  # the adapter's backoff tries again 0.05, 0.15, 0.35, 0.75, 1.55 s after
    assert node.memory.lease_renewed_at_s is not None
    assert world.dcs.get("leader", world.t) == leader
    assert "lead_retry_renew" not in rules_of_world(world, leader)  # with no retry it decided blind 8 s later
    assert node.local(world.t) - node.memory.lease_renewed_at_s < 2.0


def rules_of_world(world: World, node: str) -> list[str]:
    return [e["rule"] for e in world.trace.events if e["kind"] == "decision" and e["node"] == node]


# --- failsafe mode: a leader the DCS does not answer leads on while every member of the failsafe key accepts -----


def writable_gaps(result: Result, node: str, start: float, end: float) -> list[tuple[float, float]]:
    """The spans between `start` and `end` in which `node`'s Postgres took no writes."""
    spans = [(i["start"], i["end"]) for i in result.world.trace.writable[node].close(result.world.t) if i["on"]]
    gaps, at = [], start
    for begin, finish in sorted(spans):
        if finish <= at:
            continue
        if begin > at:
            gaps.append((at, min(begin, end)))
        at = max(at, finish)
        if at >= end:
            break
    if at < end:
        gaps.append((at, end))
    return [gap for gap in gaps if gap[1] > gap[0]]


def first(result: Result, rule: str, node: str | None = None) -> dict:
    return next(e for e in result.world.trace.events if e.get("rule") == rule and (node is None or e["node"] == node))


def key_lapsed_at(result: Result, after: float) -> float:
    """When the leader key stopped naming anyone, the first time after `after`."""
    return next(i["start"] for i in result.world.trace.leader_key.items if i["holder"] is None and i["start"] > after)


def test_failsafe_through_a_whole_dcs_outage_the_leader_writes_on_and_takes_its_key_again():
    result = run("failsafe-dcs-outage")
    assert result.ok, render_text(result)
    leader = first(result, "lead_failsafe")["node"]
    assert writable_gaps(result, leader, 60, 300) == []  # not one write refused, for twice ttl without the DCS
    assert result.summary["unavailability"] == [] and promotions_between(result, 60, 300) == []
    lapsed = key_lapsed_at(result, 60)
    assert 60 < lapsed < 60 + TTL  # the key lapsed on the DCS, whose outage ended at 120 s
    retake = first(result, "lead_failsafe_retake", leader)
    assert 120 < retake["t"] < 120 + LOOP_WAIT  # the next turn after the DCS came back
    assert result.world.trace.leader_key.items[-1]["holder"] == leader == result.summary["final_leader"]


def test_without_failsafe_the_same_outage_sends_the_leader_read_only_within_ttl():
    result = run("dcs-outage")
    assert result.ok and result.world.settings.config.failsafe_mode is False
    demoted = first(result, "lead_dcs_down")
    [(stop, _)] = [gap for gap in writable_gaps(result, demoted["node"], 60, 120)]
    assert 0 < stop - 60 < TTL  # read-only within ttl of the outage, for the rest of it
    assert result.summary["unavailable_s"] > 120 - stop


def test_failsafe_leader_cut_off_from_dcs_and_peers_goes_read_only_within_ttl_and_is_replaced():
    result = run("failsafe-leader-partition")
    assert result.ok, render_text(result)
    old = target_of(result, "partition")
    asked = first(result, "lead_failsafe", old)["t"]  # nobody answered within failsafe_timeout_s
    [(stop, _)] = writable_gaps(result, old, 60, 300)
    assert asked < stop and stop - 60 < TTL
    assert {"lead_failsafe_refused", "lead_lease_expired"} & set(rules_of(result, old))
    [promoted] = promotions_between(result, 60, 300)
    assert promoted["node"] != old and promoted["t"] >= key_lapsed_at(result, 60)  # only once the key expired
    assert result.summary["final_leader"] not in (None, old)


def test_failsafe_leader_cut_off_from_the_dcs_only_leads_on_and_the_replicas_do_not_race():
    result = run("failsafe-leader-dcs-partition")
    assert result.ok, render_text(result)
    leader = target_of(result, "partition_dcs")
    replicas = [name for name in result.world.nodes if name != leader]
    lapsed = key_lapsed_at(result, 60)
    for replica in replicas:  # they see the key lapse, but the leader asked them less than ttl ago
        assert first(result, "follow_failsafe_leader", replica)["t"] >= lapsed
        assert "follow_race" not in rules_of(result, replica)
    assert writable_gaps(result, leader, 60, 300) == [] and promotions_between(result, 60, 300) == []
    assert 150 < first(result, "lead_failsafe_retake", leader)["t"] < 150 + LOOP_WAIT  # its link back at 150 s
    assert result.summary["final_leader"] == leader


def test_failsafe_unsafe_a_member_left_out_of_the_key_races_and_splits_the_brain(capsys):
    """Patroni's documented risk: a member the failsafe key does not list (here an agent older than failsafe mode,
    which publishes no REST API URL) takes the lapsed key while the leader writes on the listed members' word."""
    result = run("failsafe-unsafe-member")
    assert result.summary["violations"][0]["invariant"] == "no_split_brain"
    assert "n1" in result.summary["violations"][0]["detail"]
    assert main(["--scenario", "failsafe-unsafe-member"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION no_split_brain" in out and "--failsafe-unsafe n1" in out


def test_failsafe_a_replica_whose_agent_restarts_does_not_race_the_leader_it_accepted():
    """The new agent process has no record of the ping the old one accepted (the REST API's memory) and sees the
    key lapsed; before racing it asks the others' REST APIs, as Patroni does, and the leader leading on in failsafe
    mode answers as a running primary (`follow_peer_primary`): no race."""
    result = run("failsafe-replica-restart")
    assert result.ok, render_text(result)


def test_failsafe_a_switchover_to_a_member_the_key_does_not_list_still_ends_with_a_leader():
    """A member the failsafe key does not list may not race, so it is no fit target (`_promotable`): the leader
    does not hand over to it, nobody waits for it, and the leader lists it again. Found by the failsafe stateful
    test (thorough profile)."""
    result = run("failsafe-switchover-to-unlisted", seed=0)
    assert result.ok, render_text(result)


@pytest.mark.parametrize(("dcs_kind", "sync"), [("etcd", False), ("zookeeper", True)])
def test_random_fault_schedules_in_failsafe_mode_keep_every_invariant(dcs_kind, sync):
    """Crashes and shutdowns included (their agents come back at the heal only); 100 seeds, a store each."""
    settings = Settings(config=ClusterConfig(failsafe_mode=True, synchronous_mode=sync), dcs_kind=dcs_kind)
    for seed in range(1, 101):
        result = simulate(SCENARIOS["random"], settings, seed)
        assert result.ok, f"seed {seed}:\n" + render_text(result)


def test_a_post_failsafe_reaches_live_linked_members_each_of_which_records_its_ping():
    world = World(Settings(config=ClusterConfig(failsafe_mode=True)), seed=1)
    world.run(60.0)
    leader = world.serving_primary()
    assert leader is not None
    members = world.dcs.view(world.t).failsafe
    assert members is not None and [name for name, _ in members] == sorted(world.nodes)  # PublishFailsafe's key
    near, frozen = (world.nodes[name] for name, _ in members if name != leader.name)
    frozen.paused_until = world.t + 60.0
    sent = world.t
    step = plan_action(world, leader, ConfirmFailsafe(members=tuple(m for m in members if m[0] != leader.name)))
    assert step.duration_s == failsafe_timeout_s(leader.config)  # one did not answer: the whole timeout
    world.run(sent + ONE_WAY_S)
    assert near.failsafe_ping == FailsafePing(leader.name, near.local(sent + ONE_WAY_S))
    assert frozen.failsafe_ping is None
    assert not step.effect(leader.local(sent))  # success only if every member accepted
    near.api_memory = replace(near.api_memory, state=State.CANDIDATE)  # racing, as its last turn ended
    assert not accept_failsafe(world, near, leader.name)
    assert "refused POST /failsafe of" in world.trace.lines[-1] and "racing" in world.trace.lines[-1]


def test_failsafe_options_and_their_replay_flags(capsys):
    assert main(["--failsafe", "--schedule", "60:partition_dcs:leader:90"]) == 0
    assert "failsafe on" in capsys.readouterr().out.splitlines()[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["--failsafe-unsafe", "n7"])
    assert exit_info.value.code == 2 and "--failsafe-unsafe n7: no such node" in capsys.readouterr().err
