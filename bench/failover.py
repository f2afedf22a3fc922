"""Failover benchmark on a real 3-node cluster (etcd, three agents, PostgreSQL 15): how long writes stop.

    .venv/bin/python -m bench.failover [--runs 3] [--loop-wait 2 10]

For each loop_wait (ttl and retry_timeout scaled to keep the lease argument: loop_wait 2 runs ttl 10, loop_wait 10
runs ttl 30 as Patroni's defaults do), one cluster, and per run, in this order:
- postmaster SIGKILL on the leader -> a write succeeds on it again (the agent restarts Postgres in place);
- switchover through POST /switchover -> a write succeeds on the named candidate;
- SIGTERM on the leader's agent -> a write succeeds on another node;
- leader host killed (agent, fence and every Postgres process SIGKILLed) -> a write succeeds on another node.
Each is also timed to the first 200 from GET /primary on the node that takes the writes (what HAProxy routes by).
Writes go straight to the nodes (no HAProxy). Prints a table of the median and the maximum over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

from tests.servers.cluster import Cluster

SETTINGS = {  # loop_wait: the timings that go with it (loop_wait + 2 * retry_timeout + safety_margin <= ttl)
    2: {"ttl": 10, "loop_wait": 2, "retry_timeout": 3, "safety_margin": 1},
    10: {"ttl": 30, "loop_wait": 10, "retry_timeout": 8, "safety_margin": 2},
}
SCENARIOS = (
    "postmaster SIGKILL -> writes back",
    "switchover via REST -> write on candidate",
    "SIGTERM on leader agent -> write elsewhere",
    "leader host killed -> write on new primary",
)


def measure(cluster: Cluster, candidates: list[int], started: float, timeout_s: float) -> tuple[int, float, float]:
    """Poll the candidates until one takes a write and answers GET /primary 200: (node, write s, /primary s)."""
    deadline = started + timeout_s
    written: tuple[int, float] | None = None
    primary: float | None = None
    while written is None or primary is None:
        if time.monotonic() > deadline:
            raise TimeoutError(cluster._explain(f"no writable primary among {candidates} within {timeout_s} s"))
        if written is None:
            for n in candidates:
                if cluster.try_write(n, f"bench-{time.monotonic_ns()}", timeout_s=1):
                    written = (n, time.monotonic() - started)
                    break
        if primary is None:
            for n in [written[0]] if written else candidates:
                if cluster.rest(n, "/primary", timeout_s=1)[0] == 200:
                    primary = time.monotonic() - started
                    break
        time.sleep(0.005)
    return written[0], written[1], primary


def crash(cluster: Cluster, primary: int) -> tuple[float, float]:
    time.sleep(0.7)  # the postmaster watch re-arms on a new postmaster within 0.5 s
    started = time.monotonic()
    cluster.kill_postgres(primary)
    _, write_s, primary_s = measure(cluster, [primary], started, 60)
    return write_s, primary_s


def switchover(cluster: Cluster, primary: int) -> tuple[float, float]:
    target = next(n for n in range(len(cluster.nodes)) if n != primary)
    request = {"leader": cluster.nodes[primary].name, "candidate": cluster.nodes[target].name}
    started = time.monotonic()
    status, answer = cluster.rest(primary, "/switchover", "POST", request, timeout_s=60)
    if status != 200:
        raise RuntimeError(f"switchover refused: {status} {answer}")
    _, write_s, primary_s = measure(cluster, [target], started, 60)
    return write_s, primary_s


def sigterm(cluster: Cluster, primary: int) -> tuple[float, float]:
    process = cluster.nodes[primary].process
    assert process is not None
    started = time.monotonic()
    process.terminate()
    others = [n for n in range(len(cluster.nodes)) if n != primary]
    _, write_s, primary_s = measure(cluster, others, started, 60)
    cluster.stop_agent(primary)  # reaps the exited agent
    cluster.start_agent(primary)
    return write_s, primary_s


def host_kill(cluster: Cluster, primary: int) -> tuple[float, float]:
    started = time.monotonic()
    cluster.kill_host(primary)
    others = [n for n in range(len(cluster.nodes)) if n != primary]
    _, write_s, primary_s = measure(cluster, others, started, 120)
    cluster.start_agent(primary)
    return write_s, primary_s


STEPS: tuple[Callable[[Cluster, int], tuple[float, float]], ...] = (crash, switchover, sigterm, host_kill)


def bench(loop_wait: int, runs: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with Cluster(3, timings=SETTINGS[loop_wait]) as cluster:
        cluster.start(timeout_s=120)
        for run in range(runs):
            for name, step in zip(SCENARIOS, STEPS, strict=True):
                primary = cluster.wait_healthy(120)
                write_s, primary_s = step(cluster, primary)
                results[name].append((write_s, primary_s))
                done = f"write {write_s:.3f} s, /primary {primary_s:.3f} s"
                print(f"  loop_wait {loop_wait} run {run + 1}: {name}: {done}", file=sys.stderr, flush=True)
        cluster.wait_healthy(120)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loop-wait", type=int, nargs="+", default=[2], choices=sorted(SETTINGS))
    args = parser.parse_args(argv)
    rows = []
    for loop_wait in args.loop_wait:
        started = time.monotonic()
        results = bench(loop_wait, args.runs)
        print(f"  loop_wait {loop_wait}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        for name in SCENARIOS:
            writes = [write for write, _ in results[name]]
            primaries = [primary for _, primary in results[name]]
            rows.append((name, loop_wait, SETTINGS[loop_wait]["ttl"], len(writes), writes, primaries))
    header = f"{'scenario':<44} {'loop_wait':>9} {'ttl':>4} {'runs':>4} {'write median':>12} {'write max':>9} " \
             f"{'/primary median':>15} {'/primary max':>12}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, loop_wait, ttl, runs, writes, primaries in rows:
        print(
            f"{name:<44} {loop_wait:>9} {ttl:>4} {runs:>4} {statistics.median(writes):>11.3f}s {max(writes):>8.3f}s "
            f"{statistics.median(primaries):>14.3f}s {max(primaries):>11.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
