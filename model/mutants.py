"""Mutation check: break the rules on purpose and see whether the property tests, the simulator's scenarios and
the explorer notice.

    python -m model.mutants [--jobs 2] [--only NAME,...] [--list]

Each mutant is one textual change to a source file, applied to a scratch copy of the project; the checks run
there in a subprocess: `pytest tests/property tests/test_simulate.py -x` and `python -m model.explore --depth 24`.
A mutant is killed when any check fails. The rule-by-rule unit tests and the golden table are left out on
purpose: they would kill every table mutant by construction, and the question is whether the *behavioural*
checks would. Prints killed / total; a survivor is a gap to close with a new property.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = (
    (
        "properties and scenarios",
        [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/property",
            "tests/test_simulate.py",
        ],
    ),
    ("explorer", [sys.executable, "-m", "model.explore", "--depth", "24"]),
)


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    meaning: str


MUTANTS = (
    Mutant(
        "drop-lag-guard",
        "fsm/facts.py",
        "            (lag_ok, lag_note),",
        "            (True, lag_note),",
        "a node lagging beyond maximum_lag_on_failover is eligible",
    ),
    Mutant(
        "drop-lease-deadline-demotion",
        "fsm/transitions.py",
        'STOP_WRITES, DisarmWatchdog, NOW_REPLICA, unless="lease_valid",',
        'STOP_WRITES, DisarmWatchdog, NOW_REPLICA, when="lease_valid", unless="lease_valid",',
        "a leader past its own lease deadline keeps writing",
    ),
    Mutant(
        "promote-before-key",
        "fsm/transitions.py",
        'rule("follow_race", TICK, FOLLOW, CAND, AcquireLeaderKey,',
        'rule("follow_race", TICK, FOLLOW, LEAD, AcquireLeaderKey, StartPrimary, Promote,',
        "a follower promotes in the same decision that asks for the key",
    ),
    Mutant(
        "skip-sync-check",
        "fsm/facts.py",
        "    if not obs.config.synchronous_mode or sync is None or sync.leader is None:",
        "    if True:",
        "in synchronous mode a node other than the sync standby may be promoted",
    ),
    Mutant(
        "follow-diverged-without-rewind",
        "fsm/facts.py",
        "    if position > fork.switch_lsn:",
        "    if False:",
        "a node whose history forked is neither rewound nor kept from promotion",
    ),
    Mutant(
        "renew-without-ttl",
        "model/effects.py",
        'held = w.dcs.compare_and_swap("leader", n.name, n.name, w.t, ttl=True, owner=n.name)',
        'held = w.dcs.compare_and_swap("leader", n.name, n.name, w.t, ttl=False, owner=n.name)',
        "the renew's compare-and-swap drops the TTL: the leader key never expires",
    ),
    Mutant(
        "release-before-demote",
        "fsm/transitions.py",
        "act(Demote, mode=DemoteMode.GRACEFUL), ReleaseLeaderKey, DisarmWatchdog,\n         NOW_REPLICA,",
        "ReleaseLeaderKey, act(Demote, mode=DemoteMode.GRACEFUL), DisarmWatchdog,\n         NOW_REPLICA,",
        "a switchover releases the key before writes stop",
    ),
    Mutant(
        "drop-dcs-down-demotion",
        "fsm/transitions.py",
        'when="lease_outlasts_retry", unless="dcs_reachable",',
        'unless="dcs_reachable",',
        "a leader cut off from the DCS keeps retrying until its deadline",
    ),
    Mutant(
        "eligible-behind-timeline",
        "fsm/facts.py",
        "            (pg.timeline >= latest,",
        "            (True,",
        "a node behind the cluster's newest timeline may be promoted",
    ),
    Mutant(
        "drop-run-time-lease-check",
        "fsm/node.py",
        "    if action.needs_valid_lease:",
        "    if False:",
        "StartPrimary and Promote run however stale their decision: a delayed promote revives a fenced server",
    ),
    Mutant(
        "no-stop-writes-in-bootstrap",
        "fsm/transitions.py",
        'rule("boot_stop_writes", TICK, BOOT, DEMO, STOP_WRITES, when="writable",',
        'rule("boot_stop_writes", TICK, BOOT, DEMO, STOP_WRITES, when="writable paused", unless="paused",',
        "a restarted agent leaves a writable Postgres it holds no lease for",
    ),
    Mutant(
        "candidate-skips-eligibility",
        "fsm/transitions.py",
        'when="holds_leader_key lease_valid eligible",',
        'when="holds_leader_key lease_valid",',
        "a candidate promotes after it stopped being eligible",
    ),
    Mutant(
        "leader-without-watchdog",
        "fsm/transitions.py",
        'rule("cand_won", TICK, CAND, LEAD, ArmWatchdog, SYNC_FIRST,',
        'rule("cand_won", TICK, CAND, LEAD, SYNC_FIRST,',
        "a failover leader never arms the watchdog, so a frozen agent cannot be fenced",
    ),
    Mutant(
        "deadline-without-margin",
        "fsm/lease.py",
        "    return renewed_at_s + config.ttl_s - config.safety_margin_s",
        "    return renewed_at_s + config.ttl_s",
        "the leader's own deadline is the key's expiry: no room for clock drift or the time demotion takes",
    ),
    Mutant(
        "promote-without-sync-setting",
        "fsm/transitions.py",
        'SYNC_FIRST = act(PrepareSyncStandby, "synchronous_mode")',
        'SYNC_FIRST = act(PrepareSyncStandby, "paused")',
        "in synchronous mode Postgres takes writes again with whatever synchronous_standby_names it has (issue 18)",
    ),
    Mutant(
        "sync-setting-unchecked",
        "fsm/facts.py",
        "    stale = owner != me or best != current or (primary and setting != expected)",
        "    stale = owner != me or best != current",
        "a leader whose synchronous_standby_names lost the key's standby is not repaired (issue 18)",
    ),
    Mutant(
        "sync-key-never-claimed",
        "fsm/facts.py",
        "    stale = owner != me or best != current or (primary and setting != expected)",
        "    stale = (current is not None and owner != me) or best != current or (primary and setting != expected)",
        "a leader with no sync key and nobody streaming acknowledges alone while anyone may be promoted (seed 563)",
    ),
    Mutant(
        "replace-sync-standby-keeping-key",
        "fsm/actions.py",
        "return cls(name=name, clear_first=name is not None and not keeps_key)",
        "return cls(name=name, clear_first=False)",
        "replication moves to a new sync standby while the key still names the old one",
    ),
)


def run_mutant(mutant: Mutant) -> tuple[Mutant, str | None, float]:
    """Apply `mutant` to a scratch copy and run the checks; returns the first check that failed, if any."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"regent-{mutant.name}-") as scratch:
        copy = Path(scratch) / "regent"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".hypothesis"))
        target = copy / mutant.path
        source = target.read_text()
        if source.count(mutant.old) != 1:
            raise SystemExit(f"mutant {mutant.name}: its text is not in {mutant.path} exactly once; update it")
        target.write_text(source.replace(mutant.old, mutant.new))
        for label, command in CHECKS:
            done = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                return mutant, label, time.perf_counter() - started
    return mutant, None, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.mutants", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutants {sorted(unknown)}; known: {', '.join(m.name for m in MUTANTS)}")
        chosen = tuple(m for m in MUTANTS if m.name in names)
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:<32} {mutant.meaning}")
        return 0
    killed = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for mutant, failed_check, seconds in pool.map(run_mutant, chosen):
            killed += failed_check is not None
            verdict = f"killed by {failed_check}" if failed_check else "SURVIVED"
            print(f"{mutant.name:<32} {verdict:<36} {seconds:6.1f} s  ({mutant.meaning})", flush=True)
    print(f"killed {killed} / {len(chosen)}")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
