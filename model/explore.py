"""Exhaustive explorer: every interleaving of discrete events in a small world, on the real `fsm.decide()`.

    python -m model.explore --nodes 3 --depth 12 [--faults crash,pause,partition,dcs-outage] [--no-watchdog]
        [--quantum 10] [--max-faults 1] [--max-states 200000] [--allow-cap] [--sync]
        [--failsafe | --failsafe-unsafe NODE]

It starts from a bootstrapped, healthy cluster (simulated for 60 s) and explores breadth first. An event is one
of: a node decides (observe + `decide()`); one action of a node's pending decision completes (so a decision can
be interrupted by anything between two of its actions); time moves on by one quantum (leases expire, the
watchdog fires, pauses and outages end); or a fault strikes (at most `--max-faults` per path). Agents may
decide as often as the explorer likes between two quanta: a superset of real schedules. States are hashed
on an abstraction (relative times in quanta, WAL relative to the furthest node), so the search covers every
distinct state up to the depth. The first violation found is the shortest one: it is printed as the path of
events and as a fault schedule for `python -m model.simulate --schedule`. Exit 1 on a violation; exit 3 when
`--max-states` stopped the search first (unless `--allow-cap`): a capped search proved nothing beyond its states.

`--failsafe` turns failsafe_mode on and explores the faults that matter to it by default (FAILSAFE_FAULTS: a
whole-DCS outage, the leader cut off from the DCS only or from everything, a frozen agent), where a POST /failsafe
reaches each member at the instant the leader's ConfirmFailsafe completes. `--failsafe-unsafe NODE` is the unsafe
configuration: NODE runs an agent older than failsafe mode (`model.world.Settings.failsafe_unaware`). The optional
fault agent-restart (a new agent process, which knows nothing of the POST /failsafe the old one accepted) is left
out of the defaults: with it the search finds the split brain of the scenario failsafe-replica-restart.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from fsm import actions as a
from fsm.observation import ClusterConfig
from model.effects import plan_action
from model.faults import Fault, inject
from model.trace import Trace
from model.world import Settings, World

FAULTS = ("crash", "pause", "partition", "dcs-outage")
FAILSAFE_FAULTS = ("pause", "partition", "partition-dcs", "dcs-outage")  # the default with --failsafe
OPTIONAL_FAULTS = (
    "scheduled-switchover",  # an operator's request: a switchover to the node one quantum ahead
    "partition-dcs",  # the node is cut off from the DCS only: its peers still reach it
    "agent-restart",  # the agent process dies and a new one starts at once; Postgres runs on
)
# Actions whose completion is an event of its own: each changes the DCS or Postgres in a way that matters to
# another node or to an invariant. The others complete together with the event before them.
CONSEQUENTIAL = {
    a.RaceForInitialize,
    a.InitDb,
    a.CloneReplica,
    a.Reclone,
    a.AcquireLeaderKey,
    a.RenewLeaderKey,
    a.ReleaseLeaderKey,
    a.StartPrimary,
    a.Promote,
    a.Demote,
    a.StopPostgres,
    a.StartStandby,
    a.FollowLeader,
    a.RewindFromLeader,
    a.SetSyncStandby,
    a.PrepareSyncStandby,
    a.RestartPrimary,
    a.RestartStandby,
    a.PublishFailsafe,
    a.ConfirmFailsafe,
}
MIB = 1_048_576


@dataclass(frozen=True)
class Event:
    kind: str  # decide, act, tick, or a fault
    node: str | None = None
    target: str | None = None  # for a fault: "leader" if it struck the leader-key holder, else the node

    def __str__(self) -> str:
        return f"{self.kind} {self.node}" if self.node else self.kind


@dataclass
class Search:
    """What a search found: how many distinct states, how deep, and the shortest violating path if any."""

    states: int
    depth: int
    path: list[Event] | None = None
    world: World | None = None  # the world at the end of `path`
    capped: bool = False  # stopped at the state limit: states beyond it were never checked
    exhausted: bool = False  # no new state remains: every reachable state (within the faults allowed) was checked


class Explorer:
    def __init__(
        self,
        nodes: int,
        watchdog: bool,
        faults: tuple[str, ...],
        quantum_s: float,
        max_faults: int,
        synchronous_mode: bool = False,
        failsafe: bool = False,
        failsafe_unaware: str | None = None,
    ) -> None:
        config = replace(
            ClusterConfig(),
            maximum_lag_on_failover_bytes=MIB,
            synchronous_mode=synchronous_mode,
            failsafe_mode=failsafe or failsafe_unaware is not None,
        )
        settings = Settings(
            nodes=nodes,
            config=config,
            watchdog=watchdog,
            max_drift=0.0,
            clock_offsets=False,
            failsafe_unaware=failsafe_unaware,
        )
        world = World(settings, seed=0)
        world.run(60.0)
        world.manual = True
        world.trace = Trace(list(world.nodes))
        for node in world.nodes.values():
            node.acting = node.wake = False
        self.root = world
        self.faults = faults
        self.quantum_s = quantum_s
        self.max_faults = max_faults
        self.start_s = world.t

    # --- successors -----------------------------------------------------------------------------

    def events(self, world: World, faults_used: int) -> list[Event]:
        events = []
        for node in world.nodes.values():
            if node.alive and not node.paused(world.t):
                events.append(Event("act" if node.pending else "decide", node.name))
        if all(self._caught_up(world, n) for n in world.nodes.values()):
            events.append(Event("tick"))
        if faults_used < self.max_faults:
            for kind in self.faults:
                if kind == "dcs-outage":
                    events.append(Event(kind))
                else:
                    holder = world.dcs.get("leader", world.t)
                    events += [
                        Event(kind, n.name, "leader" if n.name == holder else n.name)
                        for n in world.nodes.values()
                        if n.alive
                    ]
        return events

    @staticmethod
    def _caught_up(world: World, node: Any) -> bool:
        """Time may move on only once each running agent has taken its loop in this quantum and finished it:
        a live agent decides every loop_wait (the quantum); only a paused or dead one falls behind."""
        if not node.alive or node.paused(world.t):
            return True
        return node.decided_at == world.t and not node.pending

    def apply(self, world: World, event: Event) -> None:
        node = world.nodes[event.node] if event.node else None
        if event.kind == "decide" and node:
            view = world.dcs.view(world.t) if world.dcs_ok(node) else None
            node.decision = world.decide_for(node, view)
            node.decided_at = world.t
            self._complete(world, node, first=False)
        elif event.kind == "act" and node:
            self._complete(world, node, first=True)
        elif event.kind == "tick":
            self._tick(world)
        else:
            self._fault(world, event, node)
        world.checker.after_event()

    @staticmethod
    def _complete(world: World, node: Any, first: bool) -> None:
        """Complete the next consequential action (if `first`) and the inconsequential ones after it: those
        change nothing another node or the invariants could see between them (pings, callbacks, heartbeats)."""
        while node.pending and (first or type(node.pending[0]) not in CONSEQUENTIAL):
            first = False
            world.run_action(node, plan_action(world, node, node.pending[0]), node.local(world.t))
        if not node.pending:
            world.turn_over(node)

    def _tick(self, world: World) -> None:
        world.advance(world.t + self.quantum_s)
        world.dcs.expire(world.t)
        if world.dcs_down_until is not None and world.t >= world.dcs_down_until:
            world.dcs.up, world.dcs_down_until = True, None
            for node in world.nodes.values():
                if node.dcs_link:
                    world.checker.dcs_back(node)
        for node in world.nodes.values():
            if node.watchdog_deadline is not None and node.watchdog_deadline <= world.t and node.pg.running:
                node.pg.stop()
                node.watchdog_deadline = None
            if node.orphan_fence_deadline is not None and node.orphan_fence_deadline <= world.t:
                world.orphan_fence_check(node, node.orphan_fence_deadline)

    def _fault(self, world: World, event: Event, node: Any) -> None:
        ttl = world.config.ttl_s
        if event.kind == "dcs-outage":
            inject(world, Fault(world.t, "dcs_down", "all"))
            world.dcs_down_until = world.t + 2 * ttl
        elif event.kind == "pause":
            inject(world, Fault(world.t, "pause", node.name, duration_s=3 * ttl))
        elif event.kind == "scheduled-switchover":
            inject(world, Fault(world.t, "scheduled_switchover", node.name, value=self.quantum_s))
        elif event.kind == "partition-dcs":
            inject(world, Fault(world.t, "partition_dcs", node.name))
        elif event.kind == "agent-restart":
            inject(world, Fault(world.t, "agent_restart", node.name))
            node.decided_at = None  # the new agent takes its first turn in this quantum
        else:
            inject(world, Fault(world.t, event.kind, node.name))

    # --- the abstraction states are hashed on ---------------------------------------------------

    def key(self, world: World) -> tuple[Any, ...]:
        t, q = world.t, self.quantum_s
        furthest = max((n.pg.data.wal for n in world.nodes.values() if n.pg.data), default=0)

        def rel_time(at: float | None) -> int | None:
            return None if at is None else max(-1, min(20, int((at - t) // q)))

        def rel_wal(wal: int | None) -> int | None:
            return None if wal is None else min(4, (furthest - wal) // (MIB // 2))

        segments: dict[int, int] = {}

        def seg(value: int) -> int:
            return segments.setdefault(value, len(segments))

        nodes = []
        for n in world.nodes.values():
            pg, data = n.pg, n.pg.data
            nodes.append(
                (
                    n.state.value,
                    n.alive,
                    rel_time(n.paused_until),
                    n.dcs_link,
                    n.peer_link,
                    n.pending,
                    n.decided_at == t,
                    n.memory.last_outcome,
                    rel_time(n.real(n.memory.lease_renewed_at_s)),
                    rel_time(n.watchdog_deadline),
                    rel_time(n.orphan_fence_deadline),
                    rel_time(n.real(n.scheduled.at_s)) if n.scheduled else None,
                    n.api_memory.state.value,
                    n.memory.failsafe_active,
                    n.memory.failsafe_view,
                    (n.failsafe_ping.leader, rel_time(n.real(n.failsafe_ping.at_s + n.config.ttl_s)))
                    if n.failsafe_ping
                    else None,
                    rel_time(world.failsafe_word[n.name] + n.config.ttl_s) if n.name in world.failsafe_word else None,
                    pg.running,
                    pg.in_recovery,
                    pg.read_only,
                    pg.following,
                    pg.sync_standby,
                    pg.startable,
                    pg.broken,
                    None
                    if data is None
                    else (
                        data.timeline,
                        seg(data.segment),
                        rel_wal(data.wal),
                        tuple((seg(s), rel_wal(e)) for s, e in data.past),
                    ),
                )
            )

        def value(k: str, v: Any) -> str | None:
            if k.startswith("members/") or k == "status":
                return None
            if k == "failover" and v.due_s is not None:  # a scheduled time, relative like every other time
                return repr((v.leader, v.candidate, rel_time(v.due_s)))
            return repr(v)

        dcs = tuple(
            sorted((k, value(k, e.value), rel_time(world.dcs.expires_at(k))) for k, e in world.dcs.keys.items())
        )
        return (tuple(nodes), dcs, world.dcs.up, rel_time(world.dcs_down_until))

    # --- breadth-first search -------------------------------------------------------------------

    def run(self, depth: int, max_states: int) -> Search:
        seen = {self.key(self.root)}
        frontier: deque[tuple[World, list[Event], int]] = deque([(self.root, [], 0)])
        reached, cut = 0, False
        while frontier:
            world, path, faults_used = frontier.popleft()
            if len(path) >= depth:
                cut = True  # states below this one were not explored
                continue
            for event in self.events(world, faults_used):
                child = pickle.loads(pickle.dumps(world))
                self.apply(child, event)
                child_path = [*path, event]
                if child.trace.violations:
                    return Search(len(seen), len(child_path), child_path, child)
                state = self.key(child)
                if state in seen:
                    continue
                seen.add(state)
                reached = max(reached, len(child_path))
                if len(seen) >= max_states:
                    return Search(len(seen), reached, capped=True)
                frontier.append((child, child_path, faults_used + (event.kind not in ("decide", "act", "tick"))))
        return Search(len(seen), reached, exhausted=not cut)

    def replay(self, path: list[Event]) -> World:
        """The world at the end of `path` (a printed path, `parse_path`) from the root; raises ValueError at an
        event the search could not take there."""
        world, faults = pickle.loads(pickle.dumps(self.root)), 0
        for event in path:
            if (event.kind, event.node) not in {(e.kind, e.node) for e in self.events(world, faults)}:
                raise ValueError(f"{event} cannot happen after {faults} fault(s) at {world.t:g} s")
            self.apply(world, event)
            faults += event.kind not in ("decide", "act", "tick")
        return world

    def schedule(self, path: list[Event]) -> str:
        """The path's faults as a `--schedule` for the simulator (times relative to the explorer's start)."""
        t, parts, ttl = self.start_s, [], self.root.config.ttl_s
        for event in path:
            if event.kind == "tick":
                t += self.quantum_s
            elif event.kind == "dcs-outage":
                parts.append(f"{t:g}:dcs_down:all:{2 * ttl:g}")
            elif event.kind == "pause":
                parts.append(f"{t:g}:pause:{event.target}:{3 * ttl:g}")
            elif event.kind == "scheduled-switchover":
                parts.append(f"{t:g}:scheduled_switchover:{event.target}::{self.quantum_s:g}")
            elif event.kind == "partition-dcs":
                parts.append(f"{t:g}:partition_dcs:{event.target}")
            elif event.kind == "agent-restart":
                parts.append(f"{t:g}:agent_restart:{event.target}")
            elif event.kind in FAULTS:
                parts.append(f"{t:g}:{event.kind}:{event.target}")
        return ",".join(parts)


def parse_path(text: str) -> list[Event]:
    """The events of a path as the explorer prints it: "decide n1 -> pause n0 -> tick"."""
    events = []
    for item in text.split("->"):
        kind, _, node = item.strip().partition(" ")
        events.append(Event(kind, node or None, node or None))
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.explore", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, choices=(2, 3))
    parser.add_argument("--depth", type=int, default=12)
    known = (*FAULTS, *OPTIONAL_FAULTS)
    parser.add_argument(
        "--faults",
        help=f"comma-separated, from {', '.join(known)} (default {','.join(FAULTS)}; "
        f"{','.join(FAILSAFE_FAULTS)} with failsafe)",
    )
    parser.add_argument("--no-watchdog", action="store_true")
    parser.add_argument("--quantum", type=float, default=10.0, help="seconds one tick moves time on")
    parser.add_argument("--max-faults", type=int, default=1, help="faults per path")
    parser.add_argument("--max-states", type=int, default=200_000)
    parser.add_argument("--allow-cap", action="store_true", help="exit 0 when the state limit stops the search")
    parser.add_argument("--sync", action="store_true", help="synchronous_mode on")
    parser.add_argument("--failsafe", action="store_true", help="failsafe_mode on")
    parser.add_argument(
        "--failsafe-unsafe",
        metavar="NODE",
        help="failsafe_mode on, and NODE runs an agent older than it: left out of the failsafe key, it races as ever",
    )
    args = parser.parse_args(argv)
    failsafe = args.failsafe or args.failsafe_unsafe is not None
    if args.failsafe_unsafe is not None and args.failsafe_unsafe not in [f"n{i}" for i in range(args.nodes)]:
        parser.error(f"--failsafe-unsafe {args.failsafe_unsafe}: no such node (n0 .. n{args.nodes - 1})")
    chosen = args.faults if args.faults is not None else ",".join(FAILSAFE_FAULTS if failsafe else FAULTS)
    faults = tuple(f for f in chosen.split(",") if f)
    unknown = set(faults) - set(known)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(known)}")
    explorer = Explorer(
        args.nodes,
        not args.no_watchdog,
        faults,
        args.quantum,
        args.max_faults,
        args.sync,
        failsafe=failsafe,
        failsafe_unaware=args.failsafe_unsafe,
    )
    started = time.perf_counter()
    search = explorer.run(args.depth, args.max_states)
    elapsed = time.perf_counter() - started
    path, world = search.path, search.world
    watchdog = "off" if args.no_watchdog else "on"
    print(
        f"explored {search.states} states to depth {search.depth} (limit {args.depth}) in {elapsed:.1f} s: "
        f"{search.states / elapsed:,.0f} states/s; {args.nodes} nodes, faults {','.join(faults) or 'none'}, "
        f"watchdog {watchdog}{', synchronous_mode' if args.sync else ''}{_failsafe_words(args)}"
    )
    if path is None or world is None:
        if search.capped:
            print(
                f"CAPPED at --max-states {args.max_states}: no invariant violated in the states explored, "
                "but the search did not finish"
            )
            return 0 if args.allow_cap else 3
        if search.exhausted:
            print(f"no invariant violated; exhausted: no new state remains after depth {search.depth}")
        else:
            print(f"no invariant violated up to depth {args.depth} (states remain below it)")
        return 0
    violation = world.trace.violations[0]
    print(f"VIOLATION {violation['invariant']}: {violation['detail']}")
    print("shortest path: " + " -> ".join(map(str, path)))
    print("decisions on it:")
    for line in world.trace.lines:
        print("  " + line)
    flag = (" --no-watchdog" if args.no_watchdog else "") + (" --sync" if args.sync else "")
    if args.failsafe_unsafe is not None:
        flag += f" --failsafe-unsafe {args.failsafe_unsafe}"
    elif args.failsafe:
        flag += " --failsafe"
    print(f"replay: python -m model.simulate --nodes {args.nodes}{flag} --schedule '{explorer.schedule(path)}'")
    return 1


def _failsafe_words(args: argparse.Namespace) -> str:
    if args.failsafe_unsafe is not None:
        return f", failsafe_mode with {args.failsafe_unsafe} unaware of it (unsafe)"
    return ", failsafe_mode" if args.failsafe else ""


if __name__ == "__main__":
    sys.exit(main())
