"""Write availability through DCS trouble on a real 3-node cluster (etcd, three agents, PostgreSQL 15), with
failsafe_mode off and on:

    .venv/bin/python -m bench.failsafe [--outage 30]

- whole-etcd outage: etcd is SIGKILLed for `--outage` seconds while every member is healthy; a client on every
  node writes once every 10 ms (only the writable primary's writes succeed). Reported: when the last write before
  the gap was, how long the writes stopped, and the share of the outage (and the 10 s after it) during which writes
  went through.
- leader partitioned: the leader is cut off from etcd and from the other members' REST APIs (a TCP link cut, see
  tests/servers/proxy.py) while clients still reach its Postgres. Reported: how long it kept taking writes (it must
  stop within ttl, failsafe on or off), and when another member took writes.

Timings are the test suite's (ttl 10, loop_wait 2, retry_timeout 3, safety_margin 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

from tests.servers.cluster import TIMINGS, Cluster, write_gaps

TTL = TIMINGS["ttl"]
AFTER_S = 10.0  # the window goes on this long after the outage ends


def gaps(times: list[float], start: float, end: float, over_s: float = 0.5) -> list[tuple[float, float]]:
    """Spans longer than `over_s` within [start, end] with no successful write, as (from, to) offsets from start."""
    return [(a - start, b - start) for a, b in write_gaps(times, start, end) if b - a > over_s]


def started(cluster: Cluster, failsafe: bool) -> int:
    """The cluster healthy, its leader's index; in failsafe mode, once the failsafe key lists every member."""
    cluster.start(timeout_s=90)
    leader = cluster.wait_healthy()
    if failsafe:
        key = f"/service/{cluster.scope}/failsafe"
        everyone = {node.name for node in cluster.nodes}
        cluster.wait_for(lambda: set(json.loads(cluster.etcd.value(key) or "{}")) == everyone, 15, "the failsafe key")
    return leader


def outage(failsafe: bool, outage_s: float) -> str:
    with Cluster(3, failsafe_mode=failsafe, scope=f"bench-fs-{int(failsafe)}") as cluster:
        leader = started(cluster, failsafe)
        with contextlib.ExitStack() as stack:  # a client on every node: only a writable primary's writes succeed
            writes = [stack.enter_context(cluster.writer(n)) for n in range(len(cluster.nodes))]
            time.sleep(1.0)
            stopped = time.monotonic()
            cluster.stop_etcd()
            time.sleep(outage_s)
            cluster.start_etcd()
            back = time.monotonic()
            time.sleep(AFTER_S)
        end = back + AFTER_S
        times = sorted(t for on_node in writes for t in on_node)
        holes = gaps(times, stopped, end)
        lost = sum(b - a for a, b in holes)
        window = end - stopped
        writers = [cluster.nodes[n].name for n, on_node in enumerate(writes) if any(t >= stopped for t in on_node)]
        last = max((t for t in times if stopped <= t <= back), default=stopped) - stopped
        first = min((t for t in times if t > back), default=end) - back
        holes_text = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in holes) or "none"
        return (
            f"etcd down {outage_s:g} s, failsafe {'on ' if failsafe else 'off'}: writes through "
            f"{100 * (1 - lost / window):.1f}% of the {window:.0f} s window; last write during the outage at "
            f"+{last:.2f} s, first after etcd came back +{first:.2f} s; gaps {holes_text}; "
            f"leader {cluster.nodes[leader].name}, written on {', '.join(writers)}"
        )


def partition(failsafe: bool) -> str:
    with Cluster(3, failsafe_mode=failsafe, links=True, scope=f"bench-part-{int(failsafe)}") as cluster:
        leader = started(cluster, failsafe)
        with cluster.writer(leader) as on_leader:
            time.sleep(1.0)
            cut = time.monotonic()
            cluster.cut(leader)
            cluster.wait_for(lambda: not cluster.writable(leader), TTL + 10, "the cut-off leader read-only", 0.05)
            read_only = time.monotonic() - cut
        others = [n for n in range(3) if n != leader]
        new, written = cluster.wait_writable(others, 3 * TTL, value="after the partition")
        cluster.heal(leader)
        last = max(on_leader) - cut
        return (
            f"leader {cluster.nodes[leader].name} cut from etcd and peers, failsafe {'on ' if failsafe else 'off'}: "
            f"last write on it +{last:.2f} s, read-only at +{read_only:.2f} s (ttl {TTL:g} s); "
            f"{cluster.nodes[new].name} took writes at +{written - cut:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds etcd stays down")
    args = parser.parse_args()
    for failsafe in (False, True):
        print(outage(failsafe, args.outage), flush=True)
    for failsafe in (False, True):
        print(partition(failsafe), flush=True)


if __name__ == "__main__":
    main()
