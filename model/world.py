"""The simulated world: nodes (agent + Postgres + clock), the DCS, the network and a client workload, driven by
one event queue, one simulated clock and one seeded random source. Agents run the real `fsm.decide()`.

An agent is the node core of `fsm.node` (the same memory and loop policy the real agent runs) in a simulated
shell: read the DCS (retrying until `retry_timeout_s` when it cannot reach it) and Postgres, `step`, then run
the decision's actions one after another, each taking effect when it completes (see `model.effects`) if
`blocked` lets it, and `advance` the memory with its outcome; then sleep as `end_turn` says (a watch on the
leader key wakes every agent but the leader). A paused agent's pending events wait for it; a crashed node's
events are dropped. A node's REST API answers from the memory its agent published when its last turn ended
(`Node.api_memory`, as the real agent publishes it), and keeps the POST /failsafe it last accepted
(`Node.failsafe_ping`) for its agent's next turns; both go with the agent process.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Any

from fsm import Decision, State
from fsm import node as core
from fsm.actions import Action
from fsm.observation import ClusterConfig, ClusterView, FailsafePing, Member, OperatorRequest, Tags
from model.effects import READ_S, RETRY_FIRST_PAUSE_S, RETRY_MAX_PAUSE_S, Step, plan_action, read_s
from model.invariants import Checker
from model.simdcs import SimDCS
from model.simpg import SimPostgres, accepts_stream, same_lineage
from model.trace import Trace

IMMEDIATE_S = 0.001  # the gap before an agent decides again at once
INSTANT_S = 0.01  # actions this short take effect within the event that starts them


@dataclass(frozen=True)
class Settings:
    nodes: int = 3
    duration_s: float = 600.0
    config: ClusterConfig = field(default_factory=ClusterConfig)
    dcs_kind: str = "etcd"
    zookeeper_max_session_s: float = 40.0  # the server's maxSessionTimeout: a longer ttl is granted this much
    watchdog: bool = True
    write_tps: float = 100.0
    tx_bytes: int = 1024
    dcs_latency_s: tuple[float, float] = (0.001, 0.005)
    stream_delay_s: float = 0.02
    max_drift: float = 1e-4  # each node's clock runs at 1 +/- up to this rate
    clock_offsets: bool = True  # each node's monotonic clock starts at a different reading
    # The unsafe failsafe configuration: this node runs an agent older than failsafe mode. It publishes no REST API
    # URL, so the failsafe key leaves it out, and it races for a lapsed leader key as it always did.
    failsafe_unaware: str | None = None

    @property
    def write_rate(self) -> float:
        return self.write_tps * self.tx_bytes


@dataclass
class Node:
    name: str
    pg: SimPostgres = field(default_factory=SimPostgres)
    tags: Tags = field(default_factory=Tags)
    memory: core.Memory = field(default_factory=core.Memory)  # the node core's memory, as the real agent keeps it
    alive: bool = True
    generation: int = 0  # bumped when the agent dies: its pending events are dropped
    token: int = 0  # bumped when a loop is scheduled: only the latest scheduled loop runs
    paused_until: float = 0.0
    clock_offset: float = 0.0
    clock_rate: float = 1.0
    dcs_link: bool = True
    peer_link: bool = True
    lag_spike: bool = False
    slow_postgres_s: float | None = None  # how long each Postgres action takes while the slow_postgres fault lasts
    shutting_down: bool = False
    acting: bool = False
    wake: bool = False
    watchdog_deadline: float | None = None  # real time; None when disarmed
    fence_generation: int | None = None  # the agent generation whose first arm started its fence process
    orphan_fence_deadline: float | None = None  # a dead agent's fence process, still armed: it fires then
    interrupt_after: int | None = None  # the agent dies after this many actions of its next decision
    request: OperatorRequest | None = None  # an operator request for the node's next turn
    config: ClusterConfig = field(default_factory=ClusterConfig)  # the settings of its last turn (effective_config)
    stored_config: dict[str, Any] = field(default_factory=dict)  # the DCS config key as the node last read it
    scheduled: OperatorRequest | None = None  # a scheduled restart, kept (as the REST API does) until a turn answers
    decision: Decision | None = None  # the explorer's last decision of the node, whose actions may still run
    decided_at: float | None = None  # the explorer's time of the node's last decision
    running_long: tuple[int, int] | None = None  # (generation, action index) of the long action running now
    api_memory: core.Memory = field(default_factory=core.Memory)  # as its last turn ended: what its REST API reads
    failsafe_ping: FailsafePing | None = None  # the last POST /failsafe its REST API accepted (its clock)
    knows_failsafe: bool = True  # False: an agent older than failsafe mode (`Settings.failsafe_unaware`)

    @property
    def state(self) -> State:
        return self.memory.state

    @property
    def pending(self) -> tuple[Action, ...]:
        """The explorer's actions of the node's last decision still to complete."""
        return core.remaining(self.memory, self.decision)

    def local(self, t: float) -> float:
        return self.clock_offset + t * self.clock_rate

    def real(self, local: float | None) -> float | None:
        """The simulated time at which this node's clock read `local`."""
        return None if local is None else (local - self.clock_offset) / self.clock_rate

    def paused(self, t: float) -> bool:
        return self.paused_until > t


class World:
    def __init__(self, settings: Settings, seed: int) -> None:
        self.settings = settings
        self.config = settings.config
        self.rng = random.Random(seed)
        self.t = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = count()
        self.dcs = SimDCS(settings.dcs_kind, settings.config.ttl_s, settings.zookeeper_max_session_s)
        self.nodes: dict[str, Node] = {}
        for i in range(settings.nodes):
            drift = self.rng.uniform(-settings.max_drift, settings.max_drift)
            offset = self.rng.uniform(0, 1000) if settings.clock_offsets else 0.0
            node = Node(f"n{i}", clock_offset=offset, clock_rate=1 + drift, config=settings.config)
            node.knows_failsafe = node.name != settings.failsafe_unaware
            self.nodes[node.name] = node
        if settings.failsafe_unaware is not None and settings.failsafe_unaware not in self.nodes:
            raise ValueError(f"failsafe_unaware names no node: {settings.failsafe_unaware!r}")
        self.trace = Trace(list(self.nodes))
        self.checker = Checker(self)
        self._segments = count(1)
        self._sysids = count(7_300_000_000_000_000_001)
        self.acked: dict[int, int] = {}  # segment -> furthest WAL acknowledged to clients on it
        self.forks: dict[int, int] = {}  # segment -> furthest WAL from which another segment was promoted
        self.promotions = 0
        self.last_target: str | None = None
        self.manual = False  # the explorer steps the world itself: nothing is scheduled
        self.dcs_down_until: float | None = None  # the explorer's DCS outages end at a tick
        self.failsafe_word: dict[str, float] = {}  # node -> start of its last ConfirmFailsafe every member accepted
        self._leader_seen: str | None = None
        self._last_advance = 0.0
        for node in self.nodes.values():
            self.schedule_loop(node, self.rng.uniform(0, 1))

    # --- the event queue ------------------------------------------------------------------------

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        if not self.manual:
            heapq.heappush(self._queue, (t, next(self._seq), fn, args))

    def run(self, until: float) -> None:
        """Process events up to `until`, checking the invariants after each; stop at the first violation."""
        while self._queue and self._queue[0][0] <= until and not self.trace.violations:
            t, _, fn, args = heapq.heappop(self._queue)
            self.advance(t)
            fn(*args)
            self._notice_leader_change()
            self.checker.after_event()
        if not self.trace.violations:
            self.advance(until)
            self.checker.after_event()

    # --- time passing: heartbeats, client writes, streaming -------------------------------------

    def dcs_ok(self, node: Node) -> bool:
        return self.dcs.up and node.dcs_link and node.alive

    def linked(self, a: Node, b: Node) -> bool:
        return a.peer_link and b.peer_link

    def advance(self, t: float) -> None:
        dt, self.t = t - self._last_advance, t
        self._last_advance = t
        if self.dcs.kind == "zookeeper":
            for node in self.nodes.values():
                if self.dcs_ok(node) and not node.paused(t):
                    self.dcs.heartbeat(node.name, t)
        if dt <= 0:
            return
        for node in self.nodes.values():
            node.pg.replicas = frozenset()
        for node in self.nodes.values():
            if node.pg.writable:
                self._write(node, dt)
        for node in self.nodes.values():
            self._stream(node)
        for node in self.nodes.values():
            if node.pg.writable and node.pg.data:
                self._acknowledge(node)

    def _write(self, primary: Node, dt: float) -> None:
        pg = primary.pg
        assert pg.data is not None
        gain = self.settings.write_rate * dt
        if pg.sync_standby is not None and self.nodes[pg.sync_standby].pg.streaming_from != primary.name:
            # Commits wait for the synchronous standby: only transactions already in flight write WAL.
            gain = min(gain, max(0.0, pg.acked_wal + 64 * self.settings.tx_bytes - pg.data.wal))
        pg.data.wal += int(gain)

    def _stream(self, standby: Node) -> None:
        pg = standby.pg
        pg.streaming_from = None
        source = self.nodes.get(pg.following or "")
        if not (pg.running and pg.in_recovery and pg.data and source and source.pg.running and source.pg.data):
            return
        if not self.linked(standby, source) or not accepts_stream(pg.data, source.pg.data):
            return
        if not same_lineage(pg.data, source.pg.data):
            self.checker.violation(
                standby, "timeline_sanity", f"streams from {source.name} whose history diverged from its own"
            )
            return
        lag = 20 * self.config.maximum_lag_on_failover_bytes if standby.lag_spike else 0
        lag += int(self.settings.write_rate * self.settings.stream_delay_s)
        src = source.pg.data
        pg.data.wal = max(pg.data.wal, src.wal - lag)
        if src.timeline != pg.data.timeline or src.segment != pg.data.segment:
            pg.data.timeline, pg.data.segment, pg.data.history, pg.data.past = (
                src.timeline,
                src.segment,
                src.history,
                src.past,
            )
        pg.streaming_from = source.name
        source.pg.replicas = source.pg.replicas | {standby.name}

    def _acknowledge(self, primary: Node) -> None:
        pg, data = primary.pg, primary.pg.data
        assert data is not None
        if pg.sync_standby is None:
            pg.acked_wal = data.wal
        else:
            sync = self.nodes[pg.sync_standby].pg
            if sync.streaming_from == primary.name and sync.data:
                pg.acked_wal = max(pg.acked_wal, min(data.wal, sync.data.wal))
        self.acked[data.segment] = max(self.acked.get(data.segment, 0), pg.acked_wal)

    # --- agents ---------------------------------------------------------------------------------

    def schedule_loop(self, node: Node, t: float) -> None:
        node.token += 1
        self.at(t, self._loop, node, node.token)

    def _notice_leader_change(self) -> None:
        """Any change of the leader key (written, released, expired) wakes the agents that watch it."""
        holder = self.dcs.get("leader", self.t)
        if holder != self._leader_seen:
            self._leader_seen = holder
            self.wake_watchers()

    def wake_watchers(self) -> None:
        """Wake every agent that watches the leader key (etcd watch, ZooKeeper watch): all but the leader."""
        for node in self.nodes.values():
            if not node.alive or not self.dcs_ok(node) or node.state is State.LEADER:
                continue
            if node.acting:
                node.wake = True
            else:
                self.schedule_loop(node, self.t + self._latency())

    def _latency(self) -> float:
        return self.rng.uniform(*self.settings.dcs_latency_s)

    def loop_due(self, node: Node, token: int) -> bool:
        """Whether the loop scheduled with `token` runs now: the latest one, on a live node; a frozen node's waits
        until it thaws."""
        if token != node.token or not node.alive:
            return False
        if node.paused(self.t):
            self.at(node.paused_until, self._loop, node, token)
            return False
        return True

    def _loop(self, node: Node, token: int) -> None:
        if not self.loop_due(node, token):
            return
        if node.acting:
            node.wake = True
            return
        node.acting = True
        self._read(node, node.generation, self.give_up_at(node), RETRY_FIRST_PAUSE_S)

    def give_up_at(self, node: Node) -> float:
        """When a DCS operation `node` starts now gives up (simulated time): the node core's operation deadline,
        on the node's clock: retry_timeout, or its lease deadline if that comes first."""
        local = core.operation_deadline_s(node.memory, node.config, node.local(self.t))
        return max(self.t, node.real(local) or self.t)

    def _read(self, node: Node, generation: int, deadline: float, pause: float) -> None:
        """The turn's readings (`read_s` long). As the DCS adapter does, a read the DCS does not answer is tried
        again after `pause`, doubling, and once more at the `deadline` (retry_timeout after the first try); if that
        one fails too, the turn decides without a view."""
        if generation != node.generation:
            return
        if node.paused(self.t):
            self.at(node.paused_until, self._read, node, generation, deadline, pause)
        elif self.dcs_ok(node):
            view = self.dcs.view(self.t)
            self.at(self.t + read_s(self, node, view), self._decide, node, generation, view)
        elif self.t >= deadline:
            self.at(self.t + READ_S, self._decide, node, generation, None)  # Postgres is still observed
        else:
            again = min(self.t + pause, deadline)
            self.at(again, self._read, node, generation, deadline, min(2 * pause, RETRY_MAX_PAUSE_S))

    def _decide(self, node: Node, generation: int, view: ClusterView | None) -> None:
        if generation != node.generation:
            return
        if node.paused(self.t):
            self.at(node.paused_until, self._decide, node, generation, view)
            return
        before = node.state
        self._run(node, generation, before, self.decide_for(node, view))

    def decide_for(self, node: Node, view: ClusterView | None) -> Decision:
        """Read `node`'s Postgres (with the DCS `view` it read) into the node core's step; record the decision."""
        request, node.request = node.request, None  # one turn answers it
        if view is not None:
            node.stored_config = self.dcs.get("config", self.t) or {}
        dynamic = core.effective_config(self.config, node.stored_config)
        self.dcs.ttl_s = dynamic.ttl_s  # the keys it writes follow a ttl the config key changed
        config = core.effective_config(dynamic, None, self.dcs.lease_ttl_s())  # as the agent does
        if not node.knows_failsafe:
            config = replace(config, failsafe_mode=False)  # it does not know the setting
        node.config = config
        view = _on_clock_of(node, view)
        asked = core.peers_to_ask(node.name, node.memory, view, node.config)
        if view is not None and asked:
            view = core.with_positions(view, self.positions_for(node, asked))
        readings = core.Readings(
            view, node.pg.observe(), config, node.tags,
            shutting_down=node.shutting_down, request=request, scheduled=node.scheduled,
            failsafe_ping=node.failsafe_ping,
        )  # fmt: skip
        before, last_rule = node.state, node.memory.last_rule
        turn = core.step(node.name, node.memory, readings, node.local(self.t))
        node.memory, decision = turn.memory, turn.decision
        if turn.answered_scheduled:
            node.scheduled = None
        self.record(node, before, last_rule, decision)
        return decision

    def record(self, node: Node, before: State, last_rule: str | None, decision: Decision) -> None:
        """Trace a decision of `node` that changed its state or rule; its swimlane shows the new state."""
        if before is not decision.state or decision.rule != last_rule:
            self.trace.decision(self.t, node.name, before.value, decision.state.value, decision.rule, decision.why)
        self.trace.lanes[node.name].set(self.t, "state", decision.state.value)

    def api_answers(self, asker: Node, peer: Node | None) -> bool:
        """Whether `peer`'s REST API answers `asker` now: its agent runs (alive, not frozen) and the link holds."""
        return peer is not None and peer.alive and not peer.paused(self.t) and self.linked(asker, peer)

    def positions_for(self, node: Node, asked: tuple[Member, ...]) -> dict[str, core.PeerAnswer | None]:
        """What the asked members' REST APIs answer `node` (`api_answers`): their Postgres's position (if it runs)
        and whether it runs as a primary; a frozen or dead agent, or a cut link, answers nothing within the
        timeout."""
        answers: dict[str, core.PeerAnswer | None] = {}
        for member in asked:
            peer = self.nodes.get(member.name)
            if peer is None or not self.api_answers(node, peer):
                answers[member.name] = None
                continue
            pg = peer.pg.observe()
            answers[member.name] = core.PeerAnswer(pg.wal_position if pg.running else None, pg.writable)
        return answers

    def failsafe_confirmed(self, leader: Node, started_local: float) -> None:
        """Every member `leader` asked accepted its POST /failsafe, sent at `started_local` on its clock: for ttl
        from then it may write without the key (`Checker`); an event at the end of that ttl checks it stopped."""
        started = leader.real(started_local)
        assert started is not None
        self.failsafe_word[leader.name] = started
        self.at(started + leader.config.ttl_s + 1e-6, lambda: None)

    def turn_over(self, node: Node) -> None:
        """`node`'s turn has ended: its agent publishes the memory its REST API answers from."""
        node.api_memory = node.memory

    def run_action(self, node: Node, step: Step, started_local: float) -> None:
        """Run one planned action as the node core says: skipped (failed) if `blocked` at the moment it takes
        effect, else its effect; the memory advances with the outcome."""
        now_local = node.local(self.t)
        ok = core.blocked(step.action, node.memory, node.config, now_local) is None and step.effect(started_local)
        node.memory = core.advance(node.memory, step.action, ok, started_local)

    def _run(self, node: Node, generation: int, before: State, decision: Decision) -> None:
        """Start the action the node core hands out next, or end the turn when there is none."""
        action = core.next_action(node.memory, decision)
        if action is None:
            self._finish(node, before, decision)
            return
        done = node.memory.actions_run
        if node.interrupt_after is not None and done >= node.interrupt_after:
            # The agent process dies between two actions and is restarted at once: Postgres is left as it is.
            node.interrupt_after = None
            self.kill(node, f"agent died after {done} of {len(decision.actions)} actions")
            self.restart(node)
            return
        step = plan_action(self, node, action)
        args = (node, generation, step, before, decision, node.local(self.t))
        if step.duration_s <= INSTANT_S:  # a watchdog ping, a callback: done within this event
            self._complete(*args)
            return
        self.at(self.t + step.duration_s, self._complete, *args)
        interval = core.keepalive_interval_s(node.config)
        if core.takes_long(action) and step.duration_s > interval:
            node.running_long = running = (generation, node.memory.actions_run)
            self.at(self.t + interval, self._keep_alive, node, decision, running)

    def _keep_alive(self, node: Node, decision: Decision, running: tuple[int, int]) -> None:
        """The core's heartbeats, every keepalive interval while `node`'s long action still runs. A paused agent
        sends none (all its threads stop); its requests are folded into this event (they take milliseconds)."""
        if node.running_long != running:
            return
        if node.paused(self.t):
            self.at(node.paused_until, self._keep_alive, node, decision, running)
            return
        for beat in core.keepalive(node.memory, decision):
            started_local = node.local(self.t)
            step = plan_action(self, node, beat)
            ok = core.blocked(beat, node.memory, node.config, started_local) is None and step.effect(started_local)
            node.memory = core.advance_keepalive(node.memory, beat, ok, started_local)
        self.at(self.t + core.keepalive_interval_s(node.config), self._keep_alive, node, decision, running)

    def _complete(
        self, node: Node, generation: int, step: Step, before: State, decision: Decision, started_local: float
    ) -> None:
        if generation != node.generation:
            return
        if node.paused(self.t):
            self.at(node.paused_until, self._complete, node, generation, step, before, decision, started_local)
            return
        node.running_long = None
        self.run_action(node, step, started_local)
        self._run(node, generation, before, decision)

    def _finish(self, node: Node, before: State, decision: Decision) -> None:
        node.acting = False
        node.memory, wake = core.end_turn(
            node.memory, before, decision, woken=node.wake, shutting_down=node.shutting_down,
            config=node.config, now_s=node.local(self.t),
        )  # fmt: skip
        node.wake = False
        self.turn_over(node)
        if wake.kind is core.WakeKind.STOP:
            self.kill(node, "agent stopped after shutdown")
            self.checker.fault_injected()  # a node leaving after a heal is a new fault: that heal promised nothing
            return
        again = wake.kind is core.WakeKind.AT_ONCE
        later = self.t + node.config.loop_wait_s
        due = node.real(wake.by_s)  # a scheduled restart or switchover: no later than its time on the node's clock
        if due is not None:
            later = min(later, max(self.t, due))
        self.schedule_loop(node, self.t + IMMEDIATE_S if again else later)

    def kill(self, node: Node, reason: str, host: bool = False) -> None:
        """The agent dies. Its fence is a process of its own: it dies too only with the whole host (`host`);
        otherwise, armed, it outlives the agent and still fires at its deadline, whatever a new agent does."""
        node.alive, node.acting, node.wake, node.decision, node.running_long = False, False, False, None, None
        node.scheduled = None  # kept in the agent process (its REST API), as Patroni keeps it: gone with it
        node.generation += 1
        if not host and node.watchdog_deadline is not None:
            node.orphan_fence_deadline = node.watchdog_deadline
            self.at(node.orphan_fence_deadline, self.orphan_fence_check, node, node.orphan_fence_deadline)
        node.watchdog_deadline = None
        self.trace.lanes[node.name].set(self.t, "state", "down")
        self.trace.note(self.t, node.name, reason)

    def restart(self, node: Node) -> None:
        """A fresh agent process: it starts in bootstrap and knows nothing of its past lease."""
        node.alive, node.shutting_down, node.memory, node.paused_until = True, False, core.Memory(), 0.0
        node.api_memory, node.failsafe_ping = node.memory, None  # its REST API is the new process's too
        self.trace.lanes[node.name].set(self.t, "state", State.BOOTSTRAP.value)
        self.schedule_loop(node, self.t)

    # --- the watchdog ---------------------------------------------------------------------------

    def ping_watchdog(self, node: Node) -> None:
        """The watchdog fires at the node's lease deadline, read on the node's own clock."""
        deadline_local = core.lease_deadline(node.memory, node.config)
        if not self.settings.watchdog or deadline_local is None:
            return
        node.watchdog_deadline = node.real(deadline_local)
        self.at(node.watchdog_deadline, self._watchdog_check, node, node.watchdog_deadline)

    def _watchdog_check(self, node: Node, deadline: float) -> None:
        if node.watchdog_deadline == deadline and node.pg.running:
            node.pg.stop()
            node.watchdog_deadline = None
            self.trace.note(self.t, node.name, "watchdog fired: Postgres killed")

    def orphan_fence_check(self, node: Node, deadline: float) -> None:
        """The fence a dead agent left behind reaches its deadline: it kills Postgres, then exits."""
        if node.orphan_fence_deadline != deadline:
            return
        node.orphan_fence_deadline = None
        if node.pg.running:
            node.pg.stop()
            self.trace.note(self.t, node.name, "a dead agent's fence fired: Postgres killed")

    # --- the client's view ----------------------------------------------------------------------

    def serving_primary(self) -> Node | None:
        """The node HAProxy sends writes to: its agent answers /primary with 200 (leader, key, writable); in
        failsafe mode also a leader whose key lapsed, while its members' word holds its lease."""
        holder = self.dcs.get("leader", self.t)
        for node in self.nodes.values():
            if (
                node.alive
                and not node.paused(self.t)
                and node.state is State.LEADER
                and node.pg.writable
                and (holder == node.name or (holder is None and self._failsafe_lease(node)))
            ):
                return node
        return None

    def _failsafe_lease(self, node: Node) -> bool:
        memory = node.memory
        return memory.failsafe_active and core.deadline_ahead(memory, node.config, node.local(self.t)) is not None

    def new_segment(self) -> int:
        return next(self._segments)

    def new_sysid(self) -> str:
        return str(next(self._sysids))


def _on_clock_of(node: Node, view: ClusterView | None) -> ClusterView | None:
    """The DCS view with a scheduled switchover's time on `node`'s own clock. The simulated DCS holds it in
    simulated time, as the real one holds a wall-clock time that each agent converts to its monotonic clock."""
    failover = view.failover if view is not None else None
    if view is None or failover is None or failover.due_s is None:
        return view
    return replace(view, failover=replace(failover, due_s=node.local(failover.due_s)))
