"""The real agent in the simulated world: `runtime.agent.Agent` (its reads, the node core, the executor's handler
table) stepped against in-memory ports over the simulator's models.

`AgentWorld` is the simulator's `World` with one change: a node's turn is `Agent.step()` of a real Agent whose
ports (`runtime.ports`) are the ones below. They turn each adapter call back into the simulator's effect of the
same action (`model.effects`), so the physics are the simulator's and only the driver differs: every action takes
effect in the instant of its turn (the simulator's durations do not pass; only a turn that cannot read the DCS
waits retry_timeout first, as the real read does). Scenario scripts run on it as on the simulator
(tests/test_agent_scripts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from adapters.dcs import MemberRecord, Outcome, Snapshot
from adapters.postgres.settings import ReplicaMethod
from adapters.postgres.values import ClusterSettings, Result, Upstream
from fsm import actions as a
from fsm import node as core
from fsm.observation import Member, PostgresState, SyncState, TimelineSwitch
from model import effects
from model.world import IMMEDIATE_S, Node, Settings, World
from runtime.agent import Agent
from runtime.executor import Executor

WALL_EPOCH_S = 1_800_000_000.0  # the wall clock's reading at simulated time 0: every node's, NTP-synced


def wall_time(t: float) -> float:
    return WALL_EPOCH_S + t


class SimDcsPort:
    """The DCS port over the simulated store, as `node` reaches it."""

    def __init__(self, world: World, node: Node) -> None:
        self.world, self.node = world, node

    def _run(self, action: a.Action) -> Outcome:
        if not self.world.dcs_ok(self.node):
            return Outcome.UNAVAILABLE
        handler = effects.HANDLERS[type(action)]
        ok = handler(self.world, self.node, action, self.node.local(self.world.t))
        return Outcome.DONE if ok else Outcome.CONFLICT

    def read_cluster(self) -> Snapshot | None:
        if not self.world.dcs_ok(self.node):
            return None
        view = self.world.dcs.view(self.world.t)
        failover = view.failover
        if failover is not None and failover.due_s is not None:  # held in simulated time: as text, as etcd holds it
            when = datetime.fromtimestamp(wall_time(failover.due_s), UTC).isoformat()
            view = replace(view, failover=replace(failover, scheduled_at=when, due_s=None))
        return Snapshot(view, self.world.dcs.get("config", self.world.t))

    def set_ttl(self, ttl_s: float) -> None:
        self.world.dcs.ttl_s = ttl_s

    def give_up_at(self, deadline_s: float | None) -> None:
        pass  # the simulated store answers at once or not at all: no request runs long enough to cut

    def lease_ttl_s(self) -> float:
        return self.world.dcs.lease_ttl_s()

    def wait_for_leader_change(self, timeout_s: float) -> bool:
        return False  # the world's watch wakes the node (World.wake_watchers)

    def race_for_initialize(self) -> Outcome:
        return self._run(a.RaceForInitialize())

    def cancel_initialize(self) -> Outcome:
        return self._run(a.CancelInitialize())

    def set_initialize(self, system_identifier: str) -> Outcome:
        return self._run(a.SetInitializeKey(system_identifier))

    def acquire_leader(self) -> Outcome:
        return self._run(a.AcquireLeaderKey())

    def renew_leader(self) -> Outcome:
        return self._run(a.RenewLeaderKey())

    def release_leader(self) -> Outcome:
        return self._run(a.ReleaseLeaderKey())

    def publish_member(self, record: MemberRecord) -> Outcome:
        if not self.world.dcs_ok(self.node):
            return Outcome.UNAVAILABLE
        member = Member(
            record.name, role=record.role, state=record.state, wal_position=record.wal_position,
            timeline=record.timeline, tags=record.tags, api_url=record.api_url, conn_url=record.conn_url,
        )  # fmt: skip
        self.world.dcs.put(f"members/{record.name}", member, self.world.t, ttl=True, owner=record.name)
        return Outcome.DONE

    def publish_leader_optime(self, wal_position: int) -> Outcome:
        return self._run(a.PublishLeaderOptime(wal_position))

    def write_sync(self, sync: SyncState) -> Outcome:
        if not self.world.dcs_ok(self.node):
            return Outcome.UNAVAILABLE
        self.world.dcs.put("sync", sync, self.world.t)
        return Outcome.DONE

    def write_history(self, history: tuple[TimelineSwitch, ...]) -> Outcome:
        return self._run(a.PublishHistory(history))

    def clear_failover(self) -> Outcome:
        return self._run(a.ClearSwitchoverRequest())

    def close(self) -> None:
        pass


class SimPostgresPort:
    """The Postgres port over the node's simulated Postgres."""

    def __init__(self, world: World, node: Node) -> None:
        self.world, self.node = world, node

    def _run(self, action: a.Action) -> Result:
        step = effects.plan_action(self.world, self.node, action)
        ok = step.effect(self.node.local(self.world.t))
        return Result(ok, "" if ok else f"simulated {type(action).__name__} failed")

    def observe(self) -> PostgresState:
        return self.node.pg.observe()

    def bootstrap(self) -> Result:
        return self._run(a.InitDb())

    def clone(self, upstream: Upstream, methods: Sequence[ReplicaMethod] | None = None) -> Result:
        return self._run(a.CloneReplica(upstream.name, tuple(m.name for m in methods or ())))

    def reclone(self, upstream: Upstream, methods: Sequence[ReplicaMethod] | None = None) -> Result:
        return self._run(a.Reclone(upstream.name, tuple(m.name for m in methods or ())))

    def start_primary(self) -> Result:
        return self._run(a.StartPrimary())

    def start_standby(self, upstream: Upstream | None) -> Result:
        return self._run(a.StartStandby(upstream.name if upstream else None))

    def follow(self, upstream: Upstream | None) -> Result:
        return self._run(a.FollowLeader(upstream.name if upstream else None))

    def stop(self, mode: a.StopMode | str = a.StopMode.FAST) -> Result:
        return self._run(a.StopPostgres(a.StopMode(mode)))

    def promote(self, timeout_s: float = 60.0) -> Result:
        return self._run(a.Promote())

    def demote(self, mode: a.DemoteMode | str) -> Result:
        return self._run(a.Demote(a.DemoteMode(mode)))

    def restart(self, timeout_s: float | None = None) -> Result:
        return self._run(a.RestartPrimary(timeout_s))

    def rewind(self, upstream: Upstream) -> Result:
        return self._run(a.RewindFromLeader(upstream.name))

    def ensure_slots(self, members: Sequence[str]) -> Result:
        return Result(True)

    def apply_cluster_settings(self, cluster: ClusterSettings) -> Result:
        return self._run(a.ApplyClusterParameters(cluster.parameters, cluster.pg_hba, cluster.use_slots))

    def prepare_synchronous_standby(self, name: str | None, timeout_s: float = 10.0) -> Result:
        self.node.pg.sync_standby = name  # the executor writes the sync key itself, through the DCS port
        return Result(True)

    def set_synchronous_standby(self, name: str | None, timeout_s: float = 10.0) -> Result:
        pg = self.node.pg
        pg.sync_standby = name
        if name is None:
            return Result(True)
        standby = self.world.nodes[name].pg
        caught_up = standby.streaming_from == self.node.name and standby.data and pg.data
        caught_up = bool(caught_up and standby.data.wal >= pg.acked_wal)  # type: ignore[union-attr]
        return Result(caught_up, "" if caught_up else f"{name} is not a synchronous standby yet")


class SimFence:
    """The watchdog: it fires at the deadline, on the node's own clock, as the simulator's does."""

    def __init__(self, world: World, node: Node) -> None:
        self.world, self.node = world, node

    def arm(self, deadline: float) -> bool:
        if self.world.settings.watchdog:
            at = self.node.real(deadline)
            self.node.watchdog_deadline = at
            self.world.at(at, self.world._watchdog_check, self.node, at)
        return True

    ping = arm

    def disarm(self) -> bool:
        self.node.watchdog_deadline = None
        return True


class NoCallbacks:
    def fire(self, event: str, role: str) -> None:
        pass


class AgentWorld(World):
    """The simulator's world whose nodes are real Agents over the ports above."""

    def __init__(self, settings: Settings, seed: int) -> None:
        self.agents: dict[str, Agent] = {}
        super().__init__(settings, seed)
        for node in self.nodes.values():
            self.agents[node.name] = self._agent(node)

    def _agent(self, node: Node) -> Agent:
        clock = lambda: node.local(self.t)  # noqa: E731  (the node's own monotonic clock)
        executor = Executor(
            name=node.name,
            dcs=SimDcsPort(self, node),
            postgres=SimPostgresPort(self, node),
            fence=SimFence(self, node),
            callbacks=NoCallbacks(),
            conn_url=f"postgres://replicator@{node.name}:5432/postgres",
            api_url=f"http://{node.name}:8008/patroni",
            tags=node.tags,
            clock=clock,
        )
        return Agent(node.name, self.config, executor.dcs, executor, clock=clock, wall_clock=lambda: wall_time(self.t))

    def _loop(self, node: Node, token: int) -> None:
        if not self.loop_due(node, token):
            return
        if not self.dcs_ok(node):  # the read waits retry_timeout for a store that does not answer
            self.at(self.t + node.config.retry_timeout_s, self._step, node, node.generation)
        else:
            self._step(node, node.generation)

    def _step(self, node: Node, generation: int) -> None:
        if generation != node.generation:
            return
        if node.paused(self.t):
            self.at(node.paused_until, self._step, node, generation)
            return
        agent = self.agents[node.name]
        if node.request is not None:
            agent.submit(node.request)
            node.request = None
        if node.scheduled is not agent.scheduled_request:  # the world's faults schedule (or cancel) a restart
            agent.cancel_scheduled_restart()
            if node.scheduled is not None:
                agent.schedule_restart(node.scheduled, {})
        agent.shutting_down = node.shutting_down
        before, last_rule = agent.state, agent.memory.last_rule
        turn = agent.step()
        agent.wake.clear()  # what Agent.run's sleep does
        node.memory, node.config, node.scheduled = agent.memory, agent.config(), agent.scheduled_request
        self.record(node, before, last_rule, turn.decision)
        if turn.wake.kind is core.WakeKind.STOP:
            self.kill(node, "agent stopped after shutdown")
            self.checker.fault_injected()
            return
        again = turn.wake.kind is core.WakeKind.AT_ONCE
        self.schedule_loop(node, self.t + (IMMEDIATE_S if again else agent.sleep_s(turn.wake)))

    def restart(self, node: Node) -> None:
        super().restart(node)
        self.agents[node.name] = self._agent(node)  # a fresh process: it knows nothing of its past lease
