"""The exhaustive explorer finds the split brain a frozen agent causes without the watchdog, and none with it; with
failsafe mode, none in the safe configuration and the split brain of the unsafe one."""

from __future__ import annotations

import pytest

from model.explore import FAILSAFE_FAULTS, FAULTS, Explorer, main, parse_path
from model.simulate import main as simulate_main

CI_DEPTH = 24  # about 4,000 distinct states from a healthy 3-node cluster: seconds on the CI machine


def test_without_watchdog_a_paused_leader_means_split_brain_and_the_schedule_replays(capsys):
    explorer = Explorer(nodes=3, watchdog=False, faults=("pause",), quantum_s=10.0, max_faults=1)
    search = explorer.run(depth=20, max_states=50_000)
    path, world = search.path, search.world
    assert path is not None and world is not None
    assert world.trace.violations[0]["invariant"] == "no_split_brain"
    assert [e.kind for e in path].count("pause") == 1
    schedule = explorer.schedule(path)
    assert schedule.split(":")[1:3] == ["pause", "leader"]
    assert simulate_main(["--no-watchdog", "--schedule", schedule]) == 1
    assert "VIOLATION no_split_brain" in capsys.readouterr().out


def test_with_the_watchdog_no_fault_breaks_an_invariant_at_ci_depth(capsys):
    assert main(["--depth", str(CI_DEPTH)]) == 0
    out = capsys.readouterr().out
    assert "no invariant violated" in out and f"faults {','.join(FAULTS)}" in out


def test_unknown_fault_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--faults", "pause,meteor"])
    assert exit_info.value.code == 2
    assert "unknown faults ['meteor']" in capsys.readouterr().err


def test_a_capped_search_says_so_and_fails_unless_allowed(capsys):
    assert main(["--depth", str(CI_DEPTH), "--max-states", "200"]) == 3
    out = capsys.readouterr().out
    assert "CAPPED at --max-states 200" in out and "no invariant violated\n" not in out
    assert main(["--depth", str(CI_DEPTH), "--max-states", "200", "--allow-cap"]) == 0


def test_synchronous_mode_through_an_outage_and_a_crash_keeps_every_invariant(capsys):
    """Every step also checks that the sync key's standby holds every acknowledged commit. Before issue 18's fix
    this search found, at depth 35, a leader back from a DCS outage acknowledging commits its sync standby lacked."""
    assert main(["--depth", "40", "--sync", "--faults", "dcs-outage,crash"]) == 0
    out = capsys.readouterr().out
    assert "no invariant violated" in out and "synchronous_mode" in out


def test_one_crash_is_explored_to_exhaustion(capsys):
    """Every state reachable from a healthy 3-node cluster with at most one crash: no new state remains."""
    assert main(["--depth", "400", "--faults", "crash"]) == 0
    out = capsys.readouterr().out
    assert "no invariant violated; exhausted: no new state remains" in out


TWO_FAULT_DEPTH = 12  # about 15,000 states and 50 s on the CI machine; depth 20 is 48,603 states, 145 s


def test_two_faults_keep_every_invariant_to_the_ci_depth(capsys):
    assert main(["--depth", str(TWO_FAULT_DEPTH), "--max-faults", "2"]) == 0
    assert "no invariant violated up to depth 12" in capsys.readouterr().out


def test_a_scheduled_switchover_is_explored_and_its_schedule_replays(capsys):
    """The operator's scheduled switchover (the failover key with its time) in every interleaving: the leader
    waits for it (lead_await_switchover), then hands over (lead_switchover), and no invariant breaks."""
    explorer = Explorer(nodes=3, watchdog=True, faults=("scheduled-switchover",), quantum_s=10.0, max_faults=1)
    search = explorer.run(depth=16, max_states=5_000)
    assert search.path is None and search.states > 100
    assert main(["--faults", "scheduled-switchover", "--depth", "12"]) == 0
    assert "no invariant violated" in capsys.readouterr().out


# --- failsafe mode -----------------------------------------------------------------------------------------------

FAILSAFE_DEPTH = 24  # about 4,000 states with the failsafe faults, one a path: seconds on the CI machine


def test_failsafe_mode_keeps_every_invariant_through_outages_partitions_and_pauses(capsys):
    assert main(["--failsafe", "--depth", str(FAILSAFE_DEPTH)]) == 0
    out = capsys.readouterr().out
    assert f"faults {','.join(FAILSAFE_FAULTS)}" in out and "failsafe_mode" in out
    assert "no invariant violated" in out


def test_failsafe_mode_with_two_faults_a_path_keeps_every_invariant(capsys):
    """A DCS outage and a cut from the DCS, with a frozen agent, two on one path (two nodes keep it to seconds)."""
    argv = ["--nodes", "2", "--failsafe", "--max-faults", "2", "--faults", "dcs-outage,partition-dcs,pause"]
    assert main([*argv, "--depth", "20"]) == 0
    assert "no invariant violated" in capsys.readouterr().out


def test_failsafe_mode_in_synchronous_mode_loses_no_acknowledged_commit(capsys):
    """Every step checks that the sync key's standby holds every commit its leader acknowledged, while the leader
    leads on through the outage and takes its key again after it."""
    argv = ["--failsafe", "--sync", "--faults", "dcs-outage,partition-dcs,pause", "--depth", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no invariant violated" in out and "synchronous_mode, failsafe_mode" in out


def test_failsafe_unsafe_a_member_left_out_of_the_key_means_split_brain_and_the_schedule_replays(capsys):
    explorer = Explorer(3, True, ("partition-dcs",), 10.0, 1, failsafe_unaware="n1")
    search = explorer.run(depth=30, max_states=5_000)
    path, world = search.path, search.world
    assert path is not None and world is not None
    assert world.trace.violations[0]["invariant"] == "no_split_brain"
    assert "n1" in world.trace.violations[0]["detail"]  # the member the failsafe key leaves out took over
    schedule = explorer.schedule(path)
    assert schedule.split(":")[1:3] == ["partition_dcs", "leader"]
    assert simulate_main(["--failsafe-unsafe", "n1", "--schedule", schedule]) == 1
    assert "VIOLATION no_split_brain" in capsys.readouterr().out
    assert main(["--failsafe-unsafe", "n1", "--faults", "partition-dcs", "--depth", "30"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION no_split_brain" in out and f"--failsafe-unsafe n1 --schedule '{schedule}'" in out


# The old leader n0 freezes; n1 and n2 race for the lapsed key; n1 wins and promotes; the DCS goes down before
# n2's request for the key completes; n1, now leading in failsafe mode, asks n2, whose REST API answers from the
# memory of its last finished turn (a follower's): accepted. n2's race then fails and it steps back.
RACED_BEFORE_THE_PING = (
    "decide n1 -> decide n2 -> pause n0 -> tick -> decide n1 -> decide n2 -> tick -> decide n1 -> decide n2 -> tick "
    "-> decide n1 -> decide n2 -> act n1 -> decide n1 -> act n1 -> act n1 -> dcs-outage -> decide n1 -> act n1 "
    "-> act n2 -> decide n2"
)


def test_a_member_that_raced_just_before_the_ping_steps_back():
    explorer = Explorer(3, True, ("dcs-outage", "pause"), 10.0, 2, failsafe=True)
    world = explorer.replay(parse_path(RACED_BEFORE_THE_PING))
    assert not world.trace.violations
    assert world.nodes["n2"].memory.last_rule == "cand_failsafe_leader"
    assert world.nodes["n2"].failsafe_ping is not None and world.nodes["n2"].failsafe_ping.leader == "n1"
    assert world.nodes["n1"].memory.last_rule == "lead_failsafe" and world.nodes["n1"].pg.writable
    with pytest.raises(ValueError, match="cannot happen"):
        explorer.replay(parse_path("decide n1 -> act n1 -> act n1"))
