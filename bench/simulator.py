"""Simulator speed: simulated seconds per wall-clock second, by cluster size and loop_wait.

    .venv/bin/python -m bench.simulator [--hours 2]

Runs the leader-crash scenario (bootstrap, a failover, a rejoin, then steady state) for the given simulated
time and prints a table. The targets (issue 3): 10 simulated hours per wall second for 3 nodes at loop_wait 10,
never less than one.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from fsm.observation import ClusterConfig
from model.scenarios import SCENARIOS
from model.simulate import simulate
from model.world import Settings


def measure(nodes: int, loop_wait_s: float, duration_s: float) -> tuple[float, int]:
    settings = Settings(nodes=nodes, duration_s=duration_s, config=replace(ClusterConfig(), loop_wait_s=loop_wait_s))
    started = time.perf_counter()
    result = simulate(SCENARIOS["leader-crash"], settings, seed=1)
    elapsed = time.perf_counter() - started
    assert result.ok, result.summary["violations"]
    return duration_s / elapsed, len(result.world.trace.events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours per measurement")
    args = parser.parse_args()
    duration = args.hours * 3600
    print(f"leader-crash, {args.hours:g} simulated hours per row")
    print(f"{'nodes':>5} {'loop_wait s':>11} {'sim s / wall s':>15} {'sim h / wall s':>15}")
    for nodes in (3, 5, 7):
        for loop_wait in (10.0, 1.0):
            speed, _ = measure(nodes, loop_wait, duration)
            print(f"{nodes:>5} {loop_wait:>11g} {speed:>15,.0f} {speed / 3600:>15.2f}")


if __name__ == "__main__":
    main()
