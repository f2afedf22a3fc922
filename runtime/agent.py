"""The HA loop: observe -> `fsm.decide()` -> act -> sleep until loop_wait passes or something changes.

`Agent.step()` is one synchronous turn that tests drive; `Agent.run()` owns sleeping, wake-ups and shutdown. Every
turn that changes state or rule is logged on one line with the rule and why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from adapters.dcs import Dcs, Snapshot
from fsm import Decision, State, decide
from fsm.observation import ActionOutcome, AgentState, ClusterConfig, Observation, PostgresState, Trigger
from runtime.executor import Executor
from runtime.peers import with_fresh_positions

log = logging.getLogger("regent")

# Settings the DCS `config` key may change at run time (Patroni's dynamic configuration), by their YAML names.
DYNAMIC = {
    "ttl": "ttl_s",
    "loop_wait": "loop_wait_s",
    "retry_timeout": "retry_timeout_s",
    "maximum_lag_on_failover": "maximum_lag_on_failover_bytes",
    "synchronous_mode": "synchronous_mode",
    "pause": "pause",
}
MAX_IMMEDIATE = 5  # turns in a row without sleeping while things change; then loop_wait again
# Actions that change how Postgres runs. After one succeeded the next turn comes at once: the REST API answers from
# the last observation, so a leader that restarted its crashed Postgres would otherwise fail /primary for a whole
# loop_wait although it takes writes again.
CHANGES_POSTGRES = frozenset(
    {"InitDb", "CloneReplica", "Reclone", "StartPrimary", "StartStandby", "FollowLeader", "StopPostgres", "Promote",
     "Demote", "RewindFromLeader"}
)  # fmt: skip


def dynamic_config(local: ClusterConfig, stored: dict[str, Any]) -> ClusterConfig:
    """`local` overridden by the DCS `config` key's values of the right kind; ValueError if the result is invalid."""
    changes: dict[str, Any] = {}
    for key, attribute in DYNAMIC.items():
        value = stored.get(key)
        if value is not None and isinstance(value, bool) == isinstance(getattr(local, attribute), bool):
            changes[attribute] = value
    return replace(local, **changes)


@dataclass(frozen=True)
class Turn:
    """One turn of the loop, as `/decision` and the log show it."""

    at: float  # wall clock, for people
    before: State
    decision: Decision
    succeeded: frozenset[str]
    failed: frozenset[str]


class Agent:
    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        dcs: Dcs,
        executor: Executor,
        *,
        replica_methods: tuple[str, ...] = ("basebackup",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.local_config = config
        self.dcs = dcs
        self.executor = executor
        self.replica_methods = replica_methods
        self.clock = clock
        self.state = State.BOOTSTRAP
        self.outcome = ActionOutcome()
        self.postgres_down_since: float | None = None
        self.snapshot: Snapshot | None = None
        self.postgres: PostgresState | None = None
        self.turns: deque[Turn] = deque(maxlen=50)
        self.decision_counts: Counter[str] = Counter()  # turns per rule since start (the API's /metrics)
        self.shutting_down = False
        self.stopped = threading.Event()  # set once a shutdown turn has run to its end
        self.wake = threading.Event()  # set to end the current sleep at once (postmaster exit, API request)
        self._soon: deque[Callable[[], None]] = deque()  # work for the loop's thread between two turns (SIGHUP)
        self._lock = threading.Lock()  # one turn at a time (the loop, or an API-triggered turn)

    # --- one turn --------------------------------------------------------------------------------------------

    def config(self) -> ClusterConfig:
        """The local settings, overridden by what the DCS `config` key says (as Patroni's dynamic config)."""
        stored = self.snapshot.config if self.snapshot and self.snapshot.config else {}
        try:
            return dynamic_config(self.local_config, stored)
        except (TypeError, ValueError) as error:
            log.warning("ignoring the DCS config key: %s", error)
            return self.local_config

    def observe(self) -> Observation:
        snapshot = self.dcs.read_cluster()
        if snapshot is not None:
            self.snapshot = snapshot
        pg = self.executor.postgres.observe()
        self.postgres = pg
        now = self.clock()
        if pg.running:
            self.postgres_down_since = None
        elif self.postgres_down_since is None:
            self.postgres_down_since = now
        agent = AgentState(
            tags=self.executor.tags,
            create_replica_methods=self.replica_methods,
            lease_renewed_at_s=self.executor.lease.renewed_at_s,
            postgres_down_since_s=self.postgres_down_since,
            last_outcome=self.outcome,
        )
        trigger = Trigger.SHUTDOWN if self.shutting_down else Trigger.TICK
        view = snapshot.view if snapshot else None
        config = self.config()
        self.dcs.set_ttl(config.ttl_s)  # the DCS config key may have changed ttl: the keys written follow it
        if self.dcs.lease_ttl_s() < config.ttl_s:  # the store keeps the key for less (a clamped ZooKeeper session)
            config = replace(config, ttl_s=self.dcs.lease_ttl_s())
        if view is not None and self.state is State.FOLLOWER:
            view = with_fresh_positions(view, self.name, min(1.0, config.retry_timeout_s / 4))
        return Observation(self.name, now, config, view, pg, agent, trigger)

    def step(self) -> Turn:
        """Observe, decide, act: one turn of the loop."""
        with self._lock:
            observation = self.observe()
            before = self.state
            decision = decide(before, observation)
            self.state = decision.state
            self.decision_counts[decision.rule] += 1
            succeeded, failed = self.executor.run(decision.actions, self.snapshot, observation.config)
            self.outcome = ActionOutcome(succeeded, failed)
            turn = Turn(time.time(), before, decision, succeeded, failed)
            last = self.turns[-1] if self.turns else None
            if last is None or before is not decision.state or last.decision.rule != decision.rule or failed:
                log.info(
                    "%s -> %s [%s] %s%s", before.value, decision.state.value, decision.rule, decision.why,
                    f" (failed: {', '.join(sorted(failed))})" if failed else "",
                )  # fmt: skip
            self.turns.append(turn)
            return turn

    # --- the daemon ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until a shutdown turn has run. Sleeps loop_wait between quiet turns; a follower wakes when the
        leader key changes, anyone when `wake` is set."""
        immediate = 0
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
                self._sleep(self.config().loop_wait_s)
                continue
            if self.shutting_down and turn.decision.rule.startswith("shutdown"):
                self.stopped.set()
                return
            changed = (
                turn.before is not turn.decision.state or bool(turn.failed) or bool(turn.succeeded & CHANGES_POSTGRES)
            )
            immediate = immediate + 1 if changed and immediate < MAX_IMMEDIATE else 0
            if immediate:
                continue
            self._sleep(self.config().loop_wait_s)

    def _sleep(self, seconds: float) -> None:
        if self.wake.is_set() or self.shutting_down:
            self.wake.clear()
            return
        if self.state is State.LEADER:
            self.wake.wait(seconds)  # a leader's own renewals would wake a watch every loop
        else:
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
