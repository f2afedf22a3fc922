"""Faults the simulator injects, as data, and what each does to the world.

A fault's target is resolved when it fires: `leader` (the leader-key holder, else a node in the leader state),
`replica` (a live non-leader, drawn from the seed), `all`, `last` (the previous fault's target) or a node name.
A fault with `duration_s` undoes itself after that long; `heal` undoes everything and restarts dead agents,
and the liveness check starts then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsm import State
from fsm.observation import FailoverRequest, OperatorRequest, RequestKind
from model.simpg import Data

if TYPE_CHECKING:
    from model.world import Node, World

KINDS = {
    "crash": "crash a node: agent and Postgres die",
    "restart": "start a dead node's agent again",
    "postgres_crash": "kill Postgres; it restarts normally",
    "postgres_broken": "kill Postgres; it will not start again until healed",
    "pause": "freeze the agent (SIGSTOP) for duration_s",
    "partition_dcs": "cut the node off from the DCS",
    "partition_peers": "cut the node off from the other nodes",
    "partition": "cut the node off from the DCS and the other nodes",
    "dcs_down": "take the whole DCS down",
    "lag_spike": "make a replica fall far behind",
    "drift": "make the node's clock run at 1 + value",
    "switchover": "ask the leader to hand over to the target",
    "shutdown": "stop the agent gracefully",
    "heal": "undo every fault and restart dead agents (a frozen agent still thaws on its own time)",
    "interrupt": "the agent dies after `value` actions of its next decision and restarts at once",
    "agent_restart": "the agent process dies now and a new one starts at once (Postgres runs on)",
    "restart_request": "an operator asks the node's REST API to restart Postgres (its next turn answers)",
    "reinit_request": "an operator asks the node's REST API to re-clone it from the leader",
    "slow_postgres": "Postgres actions the node starts take duration_s each (a long checkpoint, a large basebackup)",
    "foreign_data": "replace a stopped node's data directory with another cluster's (an operator's mistake)",
    "scheduled_restart": "an operator schedules a restart of the node `value` seconds ahead (POST /restart with "
    "schedule; refused while one is pending)",
    "cancel_restart": "an operator deletes the node's scheduled restart (DELETE /restart)",
    "scheduled_switchover": "an operator schedules a switchover to the target `value` seconds ahead (the failover "
    "key with scheduled_at)",
}
SCHEDULED = ("scheduled_restart", "scheduled_switchover")  # their `value` is how far ahead, in seconds
REQUESTS = {"restart_request": RequestKind.RESTART, "reinit_request": RequestKind.REINITIALIZE}


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    target: str = "leader"
    duration_s: float | None = None
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")


def _resolve(world: World, target: str) -> list[Node]:
    nodes = list(world.nodes.values())
    if target == "all":
        return nodes
    if target in world.nodes:
        return [world.nodes[target]]
    if target == "last":
        return [world.nodes[world.last_target]] if world.last_target else []
    holder = world.dcs.get("leader", world.t)
    leader = world.nodes.get(holder) if holder else next((n for n in nodes if n.state is State.LEADER), None)
    if target == "leader":
        return [leader] if leader else []
    replicas = [n for n in nodes if n is not leader and n.alive]
    return [world.rng.choice(replicas)] if replicas else []


def inject(world: World, fault: Fault) -> None:
    if fault.kind != "heal":
        world.checker.fault_injected()
    if fault.kind in ("dcs_down", "heal"):
        _apply(world, fault, None)
        return
    targets = _resolve(world, fault.target)
    if targets:
        world.last_target = targets[0].name
    else:
        world.trace.note(world.t, None, f"fault {fault.kind} skipped: no {fault.target}")
    for node in targets:
        _apply(world, fault, node)


def _apply(world: World, fault: Fault, node: Node | None) -> None:
    t, kind = world.t, fault.kind
    label = f"{kind} {node.name}" if node else kind
    if fault.duration_s is not None:
        label += f" for {fault.duration_s:g} s"
    world.trace.fault(t, node.name if node else None, label)
    if kind == "crash" and node:
        node.pg.stop()
        world.kill(node, "crashed", host=True)
    elif kind == "restart" and node and not node.alive:
        world.restart(node)
    elif kind in ("postgres_crash", "postgres_broken") and node:
        node.pg.stop()
        node.pg.startable = kind == "postgres_crash"
        _wake(world, node)  # the agent's postmaster watch (a pidfd) sees the exit at once
    elif kind == "pause" and node:
        node.paused_until = t + (fault.duration_s or 0.0)
        world.trace.lanes[node.name].set(t, "state", "paused")
        world.at(node.paused_until, _resumed, world, node)
        world.checker.leader_key_written()  # on ZooKeeper a frozen client's session runs out
    elif kind in ("partition_dcs", "partition", "partition_peers") and node:
        if kind != "partition_peers":
            node.dcs_link = False
            world.checker.dcs_lost(node)
        if kind != "partition_dcs":
            node.peer_link = False
    elif kind == "dcs_down":
        world.dcs.up = False
        for each in world.nodes.values():
            world.checker.dcs_lost(each)
    elif kind == "lag_spike" and node:
        node.lag_spike = True
    elif kind == "drift" and node:
        now = node.local(t)
        node.clock_rate = 1 + fault.value
        node.clock_offset = now - t * node.clock_rate
    elif kind == "switchover" and node:
        holder = world.dcs.get("leader", t)
        world.dcs.put("failover", FailoverRequest(leader=holder, candidate=node.name), t)
        if holder in world.nodes:
            _wake(world, world.nodes[holder])  # POST /switchover wakes the leader's loop, as any request does
    elif kind == "shutdown" and node and node.alive:
        node.shutting_down = True
        world.schedule_loop(node, t)
    elif kind == "slow_postgres" and node:
        node.slow_postgres_s = fault.duration_s
    elif kind == "interrupt" and node:
        node.interrupt_after = int(fault.value)
    elif kind == "agent_restart" and node and node.alive:
        world.kill(node, "agent died")
        world.restart(node)
    elif kind == "foreign_data" and node and not node.pg.running:
        node.pg.data = Data(sysid=world.new_sysid(), segment=world.new_segment())
    elif kind == "scheduled_restart" and node:
        if node.scheduled is not None:
            world.trace.note(t, node.name, "refused: another restart is already scheduled")
        else:
            node.scheduled = OperatorRequest(RequestKind.RESTART, at_s=node.local(t + fault.value))
    elif kind == "cancel_restart" and node:
        if node.scheduled is None:
            world.trace.note(t, node.name, "no restart is scheduled")
        node.scheduled = None
    elif kind == "scheduled_switchover" and node:
        holder = world.dcs.get("leader", t)
        at = t + fault.value  # the simulated DCS holds simulated time; each node reads it on its own clock
        world.dcs.put("failover", FailoverRequest(holder, node.name, scheduled_at=f"t={at:g}s", due_s=at), t)
    elif kind in REQUESTS and node and node.alive:
        node.request = OperatorRequest(REQUESTS[kind])
        _wake(world, node)  # the REST handler wakes the loop
    elif kind == "heal":
        _heal(world)
    if fault.duration_s is not None and kind not in ("pause", "slow_postgres"):
        world.at(t + fault.duration_s, _undo, world, fault, node)


def _wake(world: World, node: Node) -> None:
    """End the agent's sleep now (the real agent's `wake` event): a turn under way takes another right after it, a
    frozen agent takes it when it thaws, a dead one never."""
    if node.alive:
        world.schedule_loop(node, world.t)


def _resumed(world: World, node: Node) -> None:
    if node.alive and not node.paused(world.t):
        world.trace.lanes[node.name].set(world.t, "state", node.state.value)


def _restore(world: World, node: Node) -> None:
    node.dcs_link = node.peer_link = True
    if world.dcs.up:
        world.checker.dcs_back(node)
    node.lag_spike = False
    node.slow_postgres_s = None
    node.pg.startable = True


def _undo(world: World, fault: Fault, node: Node | None) -> None:
    world.trace.note(world.t, node.name if node else None, f"{fault.kind} over")
    if fault.kind == "dcs_down":
        world.dcs.up = True
        for each in world.nodes.values():
            if each.dcs_link:
                world.checker.dcs_back(each)
    elif node is not None:
        _restore(world, node)


def _heal(world: World) -> None:
    world.dcs.up = True
    for node in world.nodes.values():
        _restore(world, node)
        if not node.alive:
            world.restart(node)
    world.checker.healed()
