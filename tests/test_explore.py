"""The exhaustive explorer finds the split brain a frozen agent causes without the watchdog, and none with it."""

from __future__ import annotations

import pytest

from model.explore import FAULTS, Explorer, main
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
