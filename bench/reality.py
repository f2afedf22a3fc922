"""Simulator against reality (issue 11): the same events in the simulator and on a real 3-node cluster.

    .venv/bin/python -m bench.reality [--runs 3] [--seeds 7] [--loop-wait 2|10] [--sim-only]

Both sides run at the same settings (bench/failover.py's: loop_wait 2 -> ttl 10, retry_timeout 3, safety_margin 1;
loop_wait 10 -> ttl 30, retry_timeout 8, safety_margin 2; the watchdog fence on). The PREDICTED figure is the median
over `--seeds` simulator runs (model/, the node core of fsm/), the MEASURED one the median (and max) over `--runs`
on a real cluster (tests/servers/cluster.py: etcd, three agents, PostgreSQL 15). The table gives their ratio and
whether it is within 20%; the exit status is 1 when a figure is not.

What is timed, on both sides alike:
- The moment of the fault. Each event is injected `loop_wait / 2` after the DCS applied a renewal of the leader key
  (real: an etcd watch on the key; simulator: the key's version changes), so that both sides hit the leader's loop
  at the same phase; a healthy cluster (one primary, every other node streaming) comes first.
- "writable" means a new connection can INSERT a row. Real: each node concerned is probed every 5 ms with a new
  connection (a thread per node); a successful probe counts at the instant its INSERT was sent (the client's
  connect time is not the server's unavailability), and writes count as stopped at the start of the first probe
  that fails. Simulator: the instant the node's simulated Postgres starts or stops accepting writes.
- leader host kill (agent, fence and Postgres SIGKILLed): fault -> first write on another node.
- postmaster SIGKILL on the leader: fault -> first write on the same node (the agent restarts it in place).
- switchover (POST /switchover; simulator: the `switchover` fault, which wakes the leader as the REST handler
  does): request -> first write on the named candidate.
- agent SIGSTOP on the leader for ttl + 5 s: fault -> the old primary stops taking writes (the watchdog fence kills
  it at the lease deadline), and fault -> first write on another node.
- whole-DCS outage (etcd SIGKILLed, started again OUTAGE_S later, past 2 x ttl; the simulated DCS is down for
  that plus the 0.3 s etcd takes to answer): fault -> the leader stops taking writes, and DCS back (etcd answers
  again) -> first write on any node.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace

import psycopg2

from bench.failover import SETTINGS as FAILOVER_SETTINGS
from fsm.observation import ClusterConfig
from model.faults import Fault, inject
from model.world import Settings, World
from tests.servers.cluster import TABLE, Cluster

WITHIN = 0.20
POLL_S = 0.005
BOOT_S = 60.0  # the simulated cluster bootstraps for this long before the first event
ETCD_START_S = 0.3  # a killed etcd started again answers after this long (0.28-0.31 s in the agents' logs here)


@dataclass(frozen=True)
class Timings:
    ttl: float
    loop_wait: float
    retry_timeout: float
    safety_margin: float
    outage_s: float = 0.0  # how long etcd stays killed in the whole-DCS outage
    primary_start_timeout: float = 10.0  # tests.servers.cluster.Cluster's default

    @property
    def cluster(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("ttl", "loop_wait", "retry_timeout", "safety_margin")}

    @property
    def config(self) -> ClusterConfig:
        return replace(
            ClusterConfig(),
            ttl_s=self.ttl,
            loop_wait_s=self.loop_wait,
            retry_timeout_s=self.retry_timeout,
            safety_margin_s=self.safety_margin,
            primary_start_timeout_s=self.primary_start_timeout,
        )

    @property
    def offset_s(self) -> float:
        """How long after a renewal of the leader key each event is injected."""
        return self.loop_wait / 2

    @property
    def pause_s(self) -> float:
        return self.ttl + 5


# The whole-DCS outage: past 2 x ttl, chosen so that etcd answers again between two tries of the agents' read
# backoff (its attempts come 0.8-1 s apart by then), not within milliseconds of one: at exactly 2 x ttl it came back
# 0.02-0.05 s before or after one, so that a few milliseconds of drift decided between outcomes a second apart.
OUTAGE_S = {2: 20.5, 10: 62.0}
SETTINGS = {lw: Timings(**timings, outage_s=OUTAGE_S[lw]) for lw, timings in FAILOVER_SETTINGS.items()}

# (event, what is timed): the rows of the table, in order; each event's function returns a figure per row.
ROWS = (
    ("leader host kill", "fault -> write on another node"),
    ("postmaster SIGKILL", "fault -> write on the same node"),
    ("switchover", "request -> write on the candidate"),
    ("agent SIGSTOP past ttl", "fault -> old primary stops writes"),
    ("agent SIGSTOP past ttl", "fault -> write on another node"),
    ("whole-DCS outage", "fault -> leader stops writes"),
    ("whole-DCS outage", "DCS back -> write on any node"),
)
EVENTS = ("host_kill", "postmaster_kill", "switchover", "agent_pause", "dcs_outage")
ROWS_OF = {"host_kill": 1, "postmaster_kill": 1, "switchover": 1, "agent_pause": 2, "dcs_outage": 2}


# --- the simulator ---------------------------------------------------------------------------------------------


class SimRun:
    """One simulated 3-node cluster at `timings`, bootstrapped, to inject events into and time them."""

    def __init__(self, timings: Timings, seed: int) -> None:
        self.timings = timings
        self.world = World(Settings(nodes=3, duration_s=3600, config=timings.config, watchdog=True), seed)
        self.world.run(BOOT_S)

    def leader(self) -> str:
        holder = self.world.dcs.get("leader", self.world.t)
        assert holder is not None, "no leader after the bootstrap"
        return holder

    def at_phase(self) -> float:
        """Run until the leader key's next renewal, then `offset_s` more: the instant to inject at."""
        world = self.world
        version = world.dcs.keys["leader"].version
        deadline = world.t + 2 * self.timings.ttl
        while world.dcs.keys.get("leader") is not None and world.dcs.keys["leader"].version == version:
            assert world.t < deadline, "the leader never renewed its key"
            world.run(world.t + 0.001)
        world.run(world.t + self.timings.offset_s)
        return world.t

    def inject(self, kind: str, target: str, duration_s: float | None = None) -> None:
        inject(self.world, Fault(self.world.t, kind, target, duration_s))

    def first(self, nodes: list[str], writable: bool, after: float, limit_s: float = 120) -> float:
        """Run until one of `nodes` is writable (or, with writable False, until all are not); the simulated time."""
        world = self.world

        def done() -> bool:
            states = [world.nodes[n].pg.writable for n in nodes]
            return any(states) if writable else not any(states)

        while not done():
            assert world.t < after + limit_s, f"{nodes} not {'writable' if writable else 'read-only'} in time"
            assert not world.trace.violations, world.trace.violations
            world.run(world.t + 0.001)
        return self._change_time(nodes, writable, after)

    def _change_time(self, nodes: list[str], writable: bool, after: float) -> float:
        """The exact instant (from the writable lanes the checker records) the last step crossed."""
        times = [
            item["start"]
            for n in nodes
            for item in self.world.trace.writable[n].items
            if item["on"] is writable and item["start"] >= after
        ]
        return min(times) if writable else max(times, default=self.world.t)


def sim_event(event: str, timings: Timings, seed: int) -> list[float]:
    run = SimRun(timings, seed)
    world, leader = run.world, run.leader()
    others = [n for n in world.nodes if n != leader]
    t0 = run.at_phase()
    if event == "host_kill":
        run.inject("crash", leader)
        return [run.first(others, True, t0) - t0]
    if event == "postmaster_kill":
        run.inject("postgres_crash", leader)
        run.first([leader], False, t0)
        return [run.first([leader], True, t0) - t0]
    if event == "switchover":
        run.inject("switchover", others[0])
        return [run.first([others[0]], True, t0) - t0]
    if event == "agent_pause":
        run.inject("pause", leader, timings.pause_s)
        stopped = run.first([leader], False, t0) - t0
        return [stopped, run.first(others, True, t0) - t0]
    if event == "dcs_outage":
        run.inject("dcs_down", "all", timings.outage_s + ETCD_START_S)  # down until it answers, as timed for real
        stopped = run.first([leader], False, t0) - t0
        back = t0 + timings.outage_s + ETCD_START_S
        world.run(back)
        return [stopped, run.first(list(world.nodes), True, back) - back]
    raise ValueError(event)


def predict(timings: Timings, seeds: int) -> dict[str, list[list[float]]]:
    return {event: [sim_event(event, timings, seed) for seed in range(seeds)] for event in EVENTS}


# --- the real cluster ------------------------------------------------------------------------------------------


class RealRun:
    """The same events on a real cluster (tests.servers.cluster.Cluster)."""

    def __init__(self, cluster: Cluster, timings: Timings) -> None:
        self.cluster = cluster
        self.timings = timings
        self.leader_url = f"{cluster.etcd.url}/v2/keys/service/{cluster.scope}/leader"

    def at_phase(self) -> float:
        """Wait for the DCS to apply the leader's next renewal of its key, then `offset_s` more."""
        with urllib.request.urlopen(self.leader_url, timeout=5) as answer:
            index = int(answer.headers["X-Etcd-Index"])
        deadline = time.monotonic() + 2 * self.timings.ttl
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the leader did not renew its key")
            try:
                url = f"{self.leader_url}?wait=true&waitIndex={index + 1}"
                with urllib.request.urlopen(url, timeout=left) as answer:
                    change = json.loads(answer.read())
            except (urllib.error.URLError, TimeoutError):
                continue
            index = change["node"]["modifiedIndex"]
            if change["action"] == "compareAndSwap":
                break
        renewed = time.monotonic()
        time.sleep(max(0.0, renewed + self.timings.offset_s - time.monotonic()))
        return time.monotonic()

    def probe(self, n: int) -> float | None:
        """One write on node n over a new connection: the monotonic time its INSERT was sent, or None if it failed."""
        try:
            conn = self.cluster.connect(n, timeout_s=1)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cur:
                sent = time.monotonic()
                cur.execute(f"INSERT INTO {TABLE} (v) VALUES (%s)", (f"reality-{time.monotonic_ns()}",))
            return sent
        except psycopg2.Error:
            return None
        finally:
            conn.close()

    def first_write(self, nodes: list[int], since: float, limit_s: float = 120) -> float:
        """Probe each of `nodes` in a thread of its own (one probe round over all would lag by a round) until one
        write succeeds: the earliest success, seconds after `since`."""
        found: list[float] = []
        done = threading.Event()

        def poll(n: int) -> None:
            while not done.is_set() and time.monotonic() - since <= limit_s:
                sent = self.probe(n)
                if sent is not None:
                    found.append(sent)
                    done.set()
                    return
                time.sleep(POLL_S)

        threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not found:
            raise TimeoutError(self.cluster._explain(f"no write on {nodes} within {limit_s} s"))
        return min(found) - since

    def writes_stop(self, n: int, since: float, limit_s: float = 120) -> float:
        while True:
            started = time.monotonic()
            if self.probe(n) is None:
                return started - since
            if started - since > limit_s:
                raise TimeoutError(self.cluster._explain(f"{n} still takes writes after {limit_s} s"))
            time.sleep(POLL_S)

    def event(self, event: str) -> list[float]:
        c = self.cluster
        leader = c.wait_healthy(120)
        c.write(leader, "reality")  # the table the probes write to (replicated to every node)
        time.sleep(0.7)  # the postmaster watch re-arms on a new postmaster within 0.5 s
        others = [n for n in range(len(c.nodes)) if n != leader]
        t0 = self.at_phase()
        if event == "host_kill":
            c.kill_host(leader)
            figures = [self.first_write(others, t0)]
            c.start_agent(leader)
            return figures
        if event == "postmaster_kill":
            c.kill_postgres(leader)
            return [self.first_write([leader], t0)]
        if event == "switchover":
            body = {"leader": c.nodes[leader].name, "candidate": c.nodes[others[0]].name}
            status, answer = c.rest(leader, "/switchover", "POST", body, timeout_s=60)
            if status != 200:
                raise RuntimeError(f"switchover refused: {status} {answer}")
            return [self.first_write([others[0]], t0)]
        if event == "agent_pause":
            c.pause_agent(leader)
            try:
                stopped = self.writes_stop(leader, t0)
                taken = self.first_write(others, t0)
                time.sleep(max(0.0, t0 + self.timings.pause_s - time.monotonic()))
            finally:
                c.resume_agent(leader)
            return [stopped, taken]
        if event == "dcs_outage":
            c.stop_etcd()
            try:
                stopped = self.writes_stop(leader, t0)
                time.sleep(max(0.0, t0 + self.timings.outage_s - time.monotonic()))
            finally:
                c.start_etcd()
            back = time.monotonic()  # etcd answers again
            return [stopped, self.first_write(list(range(len(c.nodes))), back)]
        raise ValueError(event)


def measure(timings: Timings, runs: int) -> dict[str, list[list[float]]]:
    results: dict[str, list[list[float]]] = {event: [] for event in EVENTS}
    with Cluster(3, timings=timings.cluster, primary_start_timeout=timings.primary_start_timeout) as cluster:
        cluster.start(timeout_s=120)
        real = RealRun(cluster, timings)
        for run in range(runs):
            for event in EVENTS:
                figures = real.event(event)
                results[event].append(figures)
                shown = ", ".join(f"{f:.3f} s" for f in figures)
                print(f"  run {run + 1}: {event}: {shown}", file=sys.stderr, flush=True)
        cluster.wait_healthy(120)
    return results


# --- the table -------------------------------------------------------------------------------------------------


def column(results: dict[str, list[list[float]]]) -> list[list[float]]:
    """Per row of ROWS, the figures of every run."""
    out: list[list[float]] = []
    for event in EVENTS:
        for i in range(ROWS_OF[event]):
            out.append([figures[i] for figures in results[event]])
    return out


def table(predicted: list[list[float]], measured: list[list[float]] | None) -> tuple[str, bool]:
    header = (
        f"{'event':<24} {'what is timed':<36} {'predicted s':>11} {'measured s':>10} {'max s':>7} "
        f"{'ratio':>6} {'within 20%':>10}"
    )
    lines, ok = [header, "-" * len(header)], True
    for i, (event, what) in enumerate(ROWS):
        p = statistics.median(predicted[i])
        if measured is None:
            lines.append(f"{event:<24} {what:<36} {p:>11.3f}")
            continue
        m, worst = statistics.median(measured[i]), max(measured[i])
        ratio = p / m if m > 0 else float("inf")
        within = abs(ratio - 1) <= WITHIN
        ok = ok and within
        lines.append(
            f"{event:<24} {what:<36} {p:>11.3f} {m:>10.3f} {worst:>7.3f} {ratio:>6.2f} {'yes' if within else 'NO':>10}"
        )
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.reality", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="real runs of each event (default 3)")
    parser.add_argument("--seeds", type=int, default=7, help="simulator seeds of each event (default 7)")
    parser.add_argument("--loop-wait", type=int, default=2, choices=sorted(SETTINGS))
    parser.add_argument("--sim-only", action="store_true", help="print the predicted figures only")
    args = parser.parse_args(argv)
    timings = SETTINGS[args.loop_wait]
    predicted = column(predict(timings, args.seeds))
    measured = None
    if not args.sim_only:
        started = time.monotonic()
        measured = column(measure(timings, args.runs))
        print(f"  real cluster: {time.monotonic() - started:.0f} s", file=sys.stderr)
    text, ok = table(predicted, measured)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"ttl {timings.ttl:g} s, loop_wait {timings.loop_wait:g} s, retry_timeout {timings.retry_timeout:g} s, "
        f"safety_margin {timings.safety_margin:g} s, watchdog on; {args.seeds} seeds, {args.runs} real runs; "
        f"load average {load}"
    )
    print(text)
    return 0 if ok or measured is None else 1


if __name__ == "__main__":
    sys.exit(main())
