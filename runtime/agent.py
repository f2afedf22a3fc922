"""The HA loop: the node core of `fsm.node` in the daemon's shell.

`Agent.step()` is one synchronous turn that tests drive: read the ports (DCS, Postgres) into readings, step the core,
run the decision's actions through the executor's handler table (each checked by the core right before it runs, its
outcome advancing the core's memory), and ask the core when the next turn comes. `Agent.run()` owns sleeping,
wake-ups and shutdown, and follows that answer. Every turn that changes state or rule is logged on one line with
the rule and why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters.dcs import Snapshot
from fsm import Decision, State
from fsm import node as core
from fsm.actions import Action
from fsm.observation import ClusterConfig, FailsafePing, Observation, OperatorRequest, PostgresState
from runtime.executor import Executor
from runtime.peers import answers_of
from runtime.ports import DcsPort
from runtime.schedule import with_due_times

log = logging.getLogger("regent")
T = TypeVar("T")


@dataclass(frozen=True)
class Turn:
    """One turn of the loop, as `/decision` and the log show it."""

    at: float  # wall clock, for people
    before: State
    decision: Decision
    succeeded: frozenset[str]
    failed: frozenset[str]
    wake: core.Wake
    failure: str = ""  # what the adapter said of the action that failed
    request: OperatorRequest | None = None  # the operator request this turn answered


@dataclass(frozen=True)
class Scheduled:
    """A scheduled restart the agent keeps for the turns: the request (its time on the monotonic clock) and what
    the REST API shows of it (Patroni's `scheduled_restart`: the schedule as ISO text, and the options)."""

    request: OperatorRequest
    shown: dict[str, Any]


@dataclass
class _Asked:
    """An operator request waiting for the turn that answers it."""

    request: OperatorRequest
    answered: threading.Event = field(default_factory=threading.Event)
    turn: Turn | None = None


class Agent:
    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        dcs: DcsPort,
        executor: Executor,
        *,
        replica_methods: tuple[str, ...] = ("basebackup",),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,  # for people, and for scheduled times given as wall-clock text
    ) -> None:
        self.name = name
        self.local_config = config
        self.dcs = dcs
        self.executor = executor
        self.replica_methods = replica_methods
        self.clock = clock
        self.wall_clock = wall_clock
        self.memory = core.Memory()
        self.snapshot: Snapshot | None = None
        self.postgres: PostgresState | None = None
        self.turns: deque[Turn] = deque(maxlen=50)
        self.last_observation: Observation | None = None
        self.decision_counts: Counter[str] = Counter()  # turns per rule since start (the API's /metrics)
        self.shutting_down = False
        self.stopped = threading.Event()  # set once a shutdown turn has run to its end
        self.wake = threading.Event()  # set to end the current sleep at once (postmaster exit, API request)
        self._soon: deque[Callable[[], None]] = deque()  # work for the loop's thread between two turns (SIGHUP)
        self._lock = threading.Lock()  # one turn at a time (the loop, or an API-triggered turn)
        self._asked: _Asked | None = None  # an operator request for the next turn (guarded by _asking)
        self._scheduled: Scheduled | None = None  # a scheduled restart, until a turn answers it (guarded by _asking)
        self._asking = threading.Lock()
        # The REST API's inbox: what it records for the turns from what the memory says (a POST /failsafe accepted).
        # The loop publishes its memory under the same lock, so a check and its record see one memory, never a turn
        # between them: a ping accepted while this node was a follower is read by the turn after the one that made
        # it a candidate (which then gives the key back), and a candidate's memory refuses one.
        self._inbox = threading.Lock()
        self._failsafe_ping: FailsafePing | None = None  # the last POST /failsafe accepted (guarded by _inbox)

    @property
    def state(self) -> State:
        return self.memory.state

    # --- one turn --------------------------------------------------------------------------------------------

    def config(self) -> ClusterConfig:
        """The local settings, overridden by what the DCS `config` key says (as Patroni's dynamic config)."""
        stored = self.snapshot.config if self.snapshot and self.snapshot.config else {}
        try:
            return core.dynamic_config(self.local_config, stored)
        except (TypeError, ValueError) as error:
            log.warning("ignoring the DCS config key: %s", error)
            return self.local_config

    def effective_config(self) -> ClusterConfig:
        """`config()` with ttl, and loop_wait if need be, cut to the lease the DCS grants (a clamped ZooKeeper
        session): what a turn decides with and how long the agent then sleeps."""
        return core.effective_config(self.config(), None, self.dcs.lease_ttl_s())

    def read(self, request: OperatorRequest | None = None) -> core.Readings:
        """This turn's readings from the ports: the DCS (the last snapshot when it does not answer) and Postgres,
        and the operator request the turn answers."""
        self.dcs.give_up_at(core.read_deadline_s(self.memory, self.config(), self.clock()))
        snapshot = self.dcs.read_cluster()
        if snapshot is not None:
            self.snapshot = snapshot
        self.postgres = self.executor.postgres.observe()
        self.dcs.set_ttl(self.config().ttl_s)  # the DCS config key may have changed ttl: the keys written follow it
        config = self.effective_config()
        view = with_due_times(snapshot.view, self.wall_clock(), self.clock()) if snapshot else None
        asked = core.peers_to_ask(self.name, self.memory, view, config)
        if view is not None and asked:
            view = core.with_positions(view, answers_of(asked, core.position_timeout_s(config)))
        scheduled = self._scheduled
        with self._inbox:
            ping = self._failsafe_ping
        return core.Readings(
            view, self.postgres, config, self.executor.tags, self.replica_methods, self.shutting_down, request,
            scheduled.request if scheduled else None, ping,
        )  # fmt: skip

    def step(self) -> Turn:
        """Read, step the core, run the actions, ask the core when the next turn comes: one turn of the loop."""
        with self._lock:
            with self._asking:
                asked, self._asked = self._asked, None
            before = self.state
            readings = self.read(asked.request if asked else None)
            planned = core.step(self.name, self.memory, readings, self.clock())
            self.last_observation = planned.observation  # what /decision explains its facts from
            decision = planned.decision
            if planned.answered_scheduled:
                self._drop_scheduled(readings.scheduled)
            acted, failure = self._act(planned.memory, decision, readings.config)
            self.decision_counts[decision.rule] += 1
            ended, wake = core.end_turn(
                acted, before, decision, woken=self.wake.is_set(), shutting_down=self.shutting_down,
                config=readings.config, now_s=self.clock(),
            )  # fmt: skip
            with self._inbox:
                self.memory = ended  # the turn's memory, published at once (see _inbox)
            outcome = self.memory.last_outcome
            turn = Turn(
                self.wall_clock(), before, decision, outcome.succeeded, outcome.failed, wake, failure, readings.request
            )
            last = self.turns[-1] if self.turns else None
            if last is None or before is not decision.state or last.decision.rule != decision.rule or outcome.failed:
                log.info(
                    "%s -> %s [%s] %s%s", before.value, decision.state.value, decision.rule, decision.why,
                    f" (failed: {', '.join(sorted(outcome.failed))})" if outcome.failed else "",
                )  # fmt: skip
            self.turns.append(turn)
            if asked is not None:
                asked.turn = turn
                asked.answered.set()
            return turn

    def _act(self, memory: core.Memory, decision: Decision, config: ClusterConfig) -> tuple[core.Memory, str]:
        """Run the actions the core hands out, one by one, through the executor; the memory after them, and what
        was said of the one that failed (if any)."""
        detail = ""
        while (action := core.next_action(memory, decision)) is not None:
            reason = core.blocked(action, memory, config, self.clock())
            started = self.clock()
            self.dcs.give_up_at(core.deadline_ahead(memory, config, self.clock()))
            if reason is not None:
                log.warning("%s skipped: %s", type(action).__name__, reason)
                ok, detail = False, reason
            elif core.takes_long(action):
                ok, detail, memory = self._run_long(action, memory, decision, config)
            else:
                ok, detail = self.executor.run(action, self.snapshot, config, memory)
            memory = core.advance(memory, action, ok, started)
        return memory, detail if memory.last_outcome.failed else ""

    def _run_long(
        self, action: Action, memory: core.Memory, decision: Decision, config: ClusterConfig
    ) -> tuple[bool, str, core.Memory]:
        """Run `action` in a worker thread and, until it ends, the core's keepalive heartbeats every interval in
        this one: a restart, a clone or a rewind must not let the lease or the member key lapse."""
        result: list[tuple[bool, str]] = []
        worker = threading.Thread(
            target=lambda: result.append(self.executor.run(action, self.snapshot, config, memory)),
            name=f"regent-{type(action).__name__}",
            daemon=True,
        )
        worker.start()
        interval = core.keepalive_interval_s(config)
        worker.join(interval)
        while worker.is_alive():
            for beat in core.keepalive(memory, decision):
                started = self.clock()
                self.dcs.give_up_at(core.deadline_ahead(memory, config, self.clock()))
                reason = core.blocked(beat, memory, config, started)
                ok = reason is None and self.executor.run(beat, self.snapshot, config, memory)[0]
                memory = core.advance_keepalive(memory, beat, ok, started)
            log.info("%s still running: heartbeats sent", type(action).__name__)
            worker.join(interval)
        ok, detail = result[0] if result else (False, f"{type(action).__name__} ended without an outcome")
        return ok, detail, memory

    def submit(self, request: OperatorRequest) -> _Asked:
        """Hand `request` to the next turn and wake the loop; `ask` waits for the answer. Raises RuntimeError when
        another request is still waiting."""
        asked = _Asked(request)
        with self._asking:
            if self._asked is not None:
                raise RuntimeError(f"a {self._asked.request.kind.value} request is still waiting for a turn")
            self._asked = asked
        self.wake.set()
        return asked

    def ask(self, request: OperatorRequest, timeout_s: float) -> Turn | None:
        """Hand `request` to the next turn and wait up to `timeout_s` for it. Returns that turn (its decision acted
        on the request, refused it, or shows why it did neither), or None when no turn came in time (the request
        is then withdrawn). Raises RuntimeError when another request is still waiting."""
        asked = self.submit(request)
        if not asked.answered.wait(timeout_s):
            with self._asking:
                if self._asked is asked:
                    self._asked = None
        return asked.turn

    def schedule_restart(self, request: OperatorRequest, shown: dict[str, Any]) -> bool:
        """Keep `request` (a restart with its time, `at_s`) for the turns until one answers it; False when another
        restart is already scheduled (one at a time, as Patroni)."""
        with self._asking:
            if self._scheduled is not None:
                return False
            self._scheduled = Scheduled(request, shown)
            self.executor.scheduled_restart = shown  # published in the member key, as Patroni does
        self.wake.set()  # the next turn learns its time and sleeps no longer than until then
        return True

    def cancel_scheduled_restart(self) -> bool:
        """Drop the scheduled restart; False when there was none."""
        with self._asking:
            had, self._scheduled = self._scheduled, None
            self.executor.scheduled_restart = None
        return had is not None

    @property
    def scheduled_request(self) -> OperatorRequest | None:
        """The scheduled restart the turns are handed (None: none)."""
        scheduled = self._scheduled
        return scheduled.request if scheduled else None

    @property
    def scheduled_restart(self) -> dict[str, Any] | None:
        """What the REST API shows of the scheduled restart (None: none)."""
        scheduled = self._scheduled
        return dict(scheduled.shown) if scheduled else None

    def answer_failsafe(self, leader: str) -> str | None:
        """Why this node refuses `leader`'s POST /failsafe (the core's `failsafe_refusal` on the newest memory), or
        None: accepted, and recorded for the next turns (`Readings.failsafe_ping`), in one step against the loop
        publishing its memory."""
        with self._inbox:
            pg, config = self.postgres, self._turn_config()
            refusal = core.failsafe_refusal(self.name, self.memory, bool(pg and pg.writable), config, leader)
            if refusal is None:
                self._failsafe_ping = FailsafePing(leader, self.clock())
            return refusal

    def failsafe_active(self) -> bool:
        """Patroni's `failsafe_mode_is_active`: this leader's lease is held by the failsafe members' word, or, as the
        last turn saw it (the core's `failsafe_leader_alive`), this node heard a leader's POST /failsafe within ttl."""
        return core.failsafe_is_active(self.memory, self.last_observation)

    def _turn_config(self) -> ClusterConfig:
        """The settings the last turn ran with (the DCS config key's, ttl as the store grants it)."""
        observed = self.last_observation
        return observed.config if observed is not None else self.config()

    def _drop_scheduled(self, answered: OperatorRequest | None) -> None:
        with self._asking:
            if self._scheduled is not None and self._scheduled.request is answered:  # not one scheduled since
                self._scheduled = None
                self.executor.scheduled_restart = None

    # --- the daemon ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until a shutdown turn has run, sleeping as the core's `Wake` says: at once, or loop_wait (a follower
        wakes early when the leader key changes, anyone when `wake` is set)."""
        while True:
            self._run_soon()
            try:
                turn = self.step()
            except Exception:
                # A bug must not end the agent: the next turn observes afresh. The lease is not renewed meanwhile,
                # so a leader stuck on one keeps its deadline and the watchdog fences it.
                log.exception("the turn failed; trying again after loop_wait")
                if self.shutting_down:
                    return
                self._sleep(self.config().loop_wait_s, watch=self.state is not State.LEADER)
                continue
            if turn.wake.kind is core.WakeKind.STOP:
                self.stopped.set()
                return
            if turn.wake.kind is core.WakeKind.AT_ONCE:
                self.wake.clear()
                continue
            self._sleep(self.sleep_s(turn.wake), watch=turn.wake.watch)

    def sleep_s(self, wake: core.Wake) -> float:
        """loop_wait, or less when the core wants the next turn by a scheduled time."""
        seconds = self.effective_config().loop_wait_s
        if wake.by_s is not None:
            seconds = min(seconds, max(0.0, wake.by_s - self.clock()))
        return seconds

    def _sleep(self, seconds: float, watch: bool) -> None:
        if self.wake.is_set() or self.shutting_down:
            self.wake.clear()
            return
        if watch:
            waker = threading.Thread(target=self._watch, args=(seconds,), daemon=True)
            waker.start()
        self.wake.wait(seconds)
        self.wake.clear()

    def _watch(self, seconds: float) -> None:
        if self.dcs.wait_for_leader_change(seconds):
            self.wake.set()

    def call_soon(self, work: Callable[[], None]) -> None:
        """Run `work` in the loop's thread before its next turn (a signal handler must not act mid-turn)."""
        self._soon.append(work)
        self.wake.set()

    def run_soon(self, work: Callable[[], T], timeout_s: float) -> T:
        """`work`'s result, run in the loop's thread between two turns; RuntimeError when the loop has not run it
        within `timeout_s` (a long action holds it; the work still runs once the loop is free)."""
        done = threading.Event()
        results: list[T] = []

        def run() -> None:
            try:
                results.append(work())
            finally:
                done.set()

        self.call_soon(run)
        if not done.wait(timeout_s):
            raise RuntimeError(
                f"the agent's loop did not take it within {timeout_s:g} s: it runs once the loop is free"
            )
        if not results:
            raise RuntimeError("it failed in the agent's loop: see the agent's log")
        return results[0]

    def _run_soon(self) -> None:
        while self._soon:
            work = self._soon.popleft()
            try:
                work()
            except Exception:
                log.exception("work queued for the loop failed")

    def shutdown(self) -> None:
        """Ask the loop for a shutdown turn (SIGTERM): a leader stops writes and releases the key at once."""
        self.shutting_down = True
        self.wake.set()
