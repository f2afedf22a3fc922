"""What each action of the decision core does to the simulated world, and how long it takes.

`plan_action` returns a Step: the duration and an effect that runs when the action completes, returning whether
it succeeded. DCS requests need the DCS reachable at both ends and take a network round trip, or fail after
`retry_timeout_s`. ConfirmFailsafe goes to the members' REST APIs instead (`confirm_failsafe`): each answers from
its own agent when the POST reaches it. `read_s` is how long a turn's readings take before it decides. Durations
are those of the real agent on the project's 2-core machine (its log, with `python -m bench.reality` comparing
whole events), rounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsm import actions as a
from fsm import node as core
from fsm.actions import Action, DemoteMode
from fsm.observation import ClusterView, FailsafePing, Member, SyncState, slot_name
from model.simpg import Data, same_lineage

if TYPE_CHECKING:
    from model.world import Node, World

# graceful: CHECKPOINT, then a fast shutdown (0.03-0.06 s), 0.07-0.13 s in all; read-only: a restart as a standby of
# nobody (0.03-0.06 s); immediate: an immediate shutdown.
DEMOTE_S = {DemoteMode.GRACEFUL: 0.1, DemoteMode.IMMEDIATE: 0.1, DemoteMode.READ_ONLY: 0.05}
CLONE_BYTES_PER_S = 100_000_000
FENCE_START_S = 0.1  # an agent's first ArmWatchdog starts its fence process (a Python interpreter): 0.03-0.13 s
READ_S = 0.03  # a turn's readings: a quorum read of the cluster from etcd and Postgres observed over SQL
PEER_ANSWER_S = 0.05  # a member's REST API answers a follower's question for its WAL position (0.02-0.15 s)
ONE_WAY_S = PEER_ANSWER_S / 2  # a request reaches a member's REST API; its answer takes as long back
RETRY_FIRST_PAUSE_S, RETRY_MAX_PAUSE_S = 0.05, 1.0  # the DCS adapter's backoff between attempts


def read_s(world: World, node: Node, view: ClusterView) -> float:
    """How long `node`'s turn reads before it decides: the DCS and Postgres, and the REST answers of the members
    the node core has it ask for their WAL positions (`peers_to_ask`), in parallel: a dead member's API refuses at
    once, a live one answers in PEER_ANSWER_S, a frozen or cut-off one not before the timeout."""
    asked = core.peers_to_ask(node.name, node.memory, view, node.config)
    timeout = core.position_timeout_s(node.config)
    waits = []
    for member in asked:
        other = world.nodes.get(member.name)
        if other is None or not other.alive:
            waits.append(0.0)
        elif other.paused(world.t) or not world.linked(node, other):
            waits.append(timeout)
        else:
            waits.append(PEER_ANSWER_S)
    return READ_S + max(waits, default=0.0)


@dataclass(frozen=True)
class Step:
    action: Action
    duration_s: float
    effect: Callable[[float], bool]  # called with the local clock reading when the action started


def plan_action(world: World, node: Node, action: Action) -> Step:
    """Called when `action` starts. Most effects happen when it completes; a restart's begins at once."""
    if isinstance(action, a.RestartPrimary):  # and RestartStandby
        return Step(action, _duration(node, action), _begin_restart(node))
    if isinstance(action, a.ConfirmFailsafe):
        return confirm_failsafe(world, node, action)
    handler = HANDLERS[type(action)]
    if action.adapter == "dcs":
        if not world.dcs_ok(node):  # the adapter retries until it gives up (retry_timeout, or the lease deadline)
            return Step(action, world.give_up_at(node) - world.t, lambda _: False)

        def over_network(started: float) -> bool:
            return world.dcs_ok(node) and handler(world, node, action, started)

        return Step(action, world.rng.uniform(*world.settings.dcs_latency_s) * 2, over_network)
    return Step(action, _duration(node, action), lambda started: handler(world, node, action, started))


def _duration(node: Node, action: Action) -> float:
    if isinstance(action, a.Demote):
        duration = DEMOTE_S[action.mode]
    elif isinstance(action, a.StartPrimary) and node.pg.running:
        duration = 0.001  # nothing to start
    elif isinstance(action, a.ArmWatchdog) and node.fence_generation != node.generation:
        duration = FENCE_START_S
    else:
        duration = DURATIONS_S.get(type(action), 0.01)
    if node.slow_postgres_s is not None and action.changes_postgres:
        duration = max(duration, node.slow_postgres_s)
    return duration


# --- DCS ----------------------------------------------------------------------------------------


def _race_initialize(w: World, n: Node, act: Action, started: float) -> bool:
    return w.dcs.create("initialize", "", w.t)


def _cancel_initialize(w: World, n: Node, act: Action, started: float) -> bool:
    w.dcs.compare_and_delete("initialize", "", w.t)
    return True


def _set_initialize(w: World, n: Node, act: a.SetInitializeKey, started: float) -> bool:
    return w.dcs.compare_and_swap("initialize", "", act.system_identifier, w.t) or (
        w.dcs.get("initialize", w.t) == act.system_identifier
    )


def _take_key(w: World, n: Node, started: float, may_create: bool) -> bool:
    held = w.dcs.compare_and_swap("leader", n.name, n.name, w.t, ttl=True, owner=n.name)
    created = not held and may_create and w.dcs.create("leader", n.name, w.t, ttl=True, owner=n.name)
    if held or created:
        w.checker.leader_key_written()
    return held or created


def _acquire(w: World, n: Node, act: Action, started: float) -> bool:
    return _take_key(w, n, started, may_create=True)


def _renew(w: World, n: Node, act: Action, started: float) -> bool:
    return _take_key(w, n, started, may_create=False)


def _release(w: World, n: Node, act: Action, started: float) -> bool:
    w.dcs.compare_and_delete("leader", n.name, w.t)
    return True


def _write_sync_key(w: World, n: Node, standby: str | None) -> None:
    w.dcs.put("sync", SyncState(n.name, standby), w.t)


def _set_sync(w: World, n: Node, act: a.SetSyncStandby, started: float) -> bool:
    if act.name is None or act.clear_first:
        _write_sync_key(w, n, None)  # the key lets nobody else be promoted before the setting changes
    n.pg.sync_standby = act.name  # synchronous_standby_names: commits wait for it from now on
    if act.name is None:
        return True
    standby = w.nodes[act.name].pg
    caught_up = standby.streaming_from == n.name and standby.data and n.pg.data and standby.data.wal >= n.pg.acked_wal
    if caught_up:
        _write_sync_key(w, n, act.name)
    return bool(caught_up)


def _prepare_sync(w: World, n: Node, act: a.PrepareSyncStandby, started: float) -> bool:
    if act.name is None:
        _write_sync_key(w, n, None)
    n.pg.sync_standby = act.name
    return True


def _publish_member(w: World, n: Node, act: a.PublishMember, started: float) -> bool:
    pg = n.pg.observe()
    member = Member(
        n.name,
        api_url=f"http://{n.name}:8008/patroni" if n.knows_failsafe else None,  # see Settings.failsafe_unaware
        role=act.role,
        state="running" if pg.running else "stopped",
        wal_position=pg.wal_position,
        timeline=pg.timeline,
        tags=n.tags,
    )
    w.dcs.put(f"members/{n.name}", member, w.t, ttl=True, owner=n.name)
    return True


def _publish_optime(w: World, n: Node, act: a.PublishLeaderOptime, started: float) -> bool:
    w.dcs.put("status", act.wal_position, w.t)
    return True


def _publish_history(w: World, n: Node, act: a.PublishHistory, started: float) -> bool:
    w.dcs.put("history", act.history, w.t)
    return True


def _clear_failover(w: World, n: Node, act: Action, started: float) -> bool:
    w.dcs.delete("failover", w.t)
    return True


def _publish_failsafe(w: World, n: Node, act: a.PublishFailsafe, started: float) -> bool:
    w.dcs.put("failsafe", dict(act.members), w.t)
    return True


# --- the members' REST APIs ---------------------------------------------------------------------


def confirm_failsafe(world: World, leader: Node, action: a.ConfirmFailsafe) -> Step:
    """POST /failsafe to every member `action` names, at once. A member whose API answers receives it ONE_WAY_S
    later and answers as its agent's `failsafe_refusal` says then, recording the ping if it accepts
    (`accept_failsafe`); the action succeeds if every member accepted. It takes PEER_ANSWER_S when all of them
    answer, else the whole `failsafe_timeout_s`. The explorer steps the world itself: there every member receives
    the POST when the action completes."""
    peers = [world.nodes.get(name) for name, _ in action.members]
    reached = [peer for peer in peers if peer is not None and world.api_answers(leader, peer)]
    everyone = len(reached) == len(peers)
    duration = PEER_ANSWER_S if everyone else core.failsafe_timeout_s(leader.config)
    accepted: dict[str, bool] = {}

    def receive(peer: Node) -> None:
        if world.api_answers(leader, peer):  # it may have frozen or been cut off while the POST was on its way
            accepted[peer.name] = accept_failsafe(world, peer, leader.name)

    for peer in reached:
        world.at(world.t + ONE_WAY_S, receive, peer)

    def effect(started: float) -> bool:
        if world.manual:
            for peer in reached:
                receive(peer)
        ok = everyone and len(accepted) == len(peers) and all(accepted.values())
        if ok:
            world.failsafe_confirmed(leader, started)
        return ok

    return Step(action, duration, effect)


def accept_failsafe(world: World, peer: Node, leader: str) -> bool:
    """`peer`'s REST API answers `leader`'s POST /failsafe: the core's `failsafe_refusal` on the memory its agent
    published when its last turn ended (the real agent's, `runtime.agent.Agent.answer_failsafe`), its Postgres
    and its last turn's settings. Accepted: the agent's next turns read the ping (`Readings.failsafe_ping`)."""
    refusal = core.failsafe_refusal(peer.name, peer.api_memory, peer.pg.writable, peer.config, leader)
    if refusal is None:
        peer.failsafe_ping = FailsafePing(leader, peer.local(world.t))
    else:
        world.trace.note(world.t, peer.name, f"refused POST /failsafe of {leader}: {refusal}")
    return refusal is None


# --- Postgres -----------------------------------------------------------------------------------


def _initdb(w: World, n: Node, act: Action, started: float) -> bool:
    if n.pg.data is None or n.pg.broken:
        n.pg.data, n.pg.broken, n.pg.fresh = Data(sysid=w.new_sysid(), segment=w.new_segment()), False, True
    return True


def _clone(w: World, n: Node, act: a.CloneReplica, started: float) -> bool:
    source = w.nodes.get(act.source)
    if source is None or not source.pg.running or source.pg.data is None or not w.linked(n, source):
        return False
    src = source.pg.data
    n.pg.stop()
    n.pg.data = Data(src.sysid, src.timeline, src.segment, src.wal, src.history, src.past)
    n.pg.broken, n.pg.startable, n.pg.acked_wal, n.pg.sync_standby = False, True, 0, None
    return True


def _start_primary(w: World, n: Node, act: Action, started: float) -> bool:
    pg = n.pg
    if pg.running:
        return True
    return pg.start(None, primary=pg.fresh or pg.was_primary)


def _start_standby(w: World, n: Node, act: a.StartStandby, started: float) -> bool:
    pg = n.pg
    if pg.running and not pg.in_recovery:
        pg.stop()  # never leave a writable primary running under a standby's name
    pg.sync_standby = None  # the adapter writes a standby's settings without synchronous_standby_names
    if pg.running:
        pg.following = act.upstream
        return True
    return pg.start(act.upstream, primary=False)


def _follow(w: World, n: Node, act: a.FollowLeader, started: float) -> bool:
    if not (n.pg.running and n.pg.in_recovery):
        return False
    n.pg.following, n.pg.sync_standby = act.upstream, None
    return True


def _stop(w: World, n: Node, act: Action, started: float) -> bool:
    n.pg.stop()
    return True


def _promote(w: World, n: Node, act: Action, started: float) -> bool:
    pg = n.pg
    if not pg.running:
        return False
    if pg.in_recovery:
        assert pg.data is not None
        w.checker.promoting(n)
        segment = pg.data.segment
        w.forks[segment] = max(w.forks.get(segment, 0), pg.data.wal)
        # What clients were told is committed carries over; WAL past it (commits still waiting for a synchronous
        # standby when this server stopped taking writes) was never acknowledged, and the first commit the new
        # timeline acknowledges will have needed its standby to receive that WAL first.
        pg.acked_wal = min(pg.data.wal, w.acked.get(segment, 0))
        pg.promote(w.new_segment())
        w.promotions += 1
        w.trace.note(w.t, n.name, f"promoted: timeline {pg.data.timeline} at WAL {pg.data.wal}")
    pg.read_only = False
    return pg.writable


def _demote(w: World, n: Node, act: a.Demote, started: float) -> bool:
    pg = n.pg
    if act.mode is DemoteMode.GRACEFUL and pg.writable and pg.data:
        for other in w.nodes.values():  # a clean shutdown sends every streaming standby all the WAL
            if other.pg.streaming_from == n.name and other.pg.data:
                other.pg.data.wal = pg.data.wal
    if act.mode is DemoteMode.READ_ONLY and pg.running:
        # restarted as a standby of nobody, whose settings carry no synchronous_standby_names
        pg.in_recovery, pg.read_only, pg.following, pg.sync_standby = True, False, None, None
        pg.was_primary = False  # it runs with standby.signal now: a later start keeps it a standby
    else:
        pg.stop()
    return True


def _begin_restart(n: Node) -> Callable[[float], bool]:
    """A restart stops Postgres when it starts (its writes stop then) and, when it completes, starts it in the
    role it ran in: standby.signal stays as it was."""
    pg = n.pg
    if not pg.running:
        return lambda _: False
    standby_of, primary = pg.following, not pg.in_recovery
    pg.stop()
    return lambda _: pg.start(standby_of, primary=primary)


def _rewind(w: World, n: Node, act: a.RewindFromLeader, started: float) -> bool:
    source = w.nodes.get(act.leader)
    data = n.pg.data
    if (
        n.pg.running
        or not n.pg.can_rewind
        or data is None
        or source is None
        or source.pg.data is None
        or not source.pg.running
        or not w.linked(n, source)
    ):
        return False
    src = source.pg.data
    fork = None
    for segment, end in ((data.segment, data.wal), *reversed(data.past)):
        theirs = src.end_of(segment)
        if theirs is not None:
            fork = min(end, theirs)
            break
    if fork is None:
        return False
    n.pg.data = Data(src.sysid, src.timeline, src.segment, fork, src.history, src.past)
    assert same_lineage(n.pg.data, src)
    return True


def _watchdog_ping(w: World, n: Node, act: Action, started: float) -> bool:
    w.ping_watchdog(n)
    return True


def _watchdog_arm(w: World, n: Node, act: Action, started: float) -> bool:
    n.fence_generation = n.generation  # this agent's fence process runs from now on
    return _watchdog_ping(w, n, act, started)


def _watchdog_disarm(w: World, n: Node, act: Action, started: float) -> bool:
    n.watchdog_deadline = None
    return True


def _nothing(w: World, n: Node, act: Action, started: float) -> bool:
    return True


def _ensure_slots(w: World, n: Node, act: a.EnsureReplicationSlots, started: float) -> bool:
    """The slots themselves are not modelled (WAL is never recycled here): only their names, which a turn sees."""
    if not n.pg.running:
        return False
    n.pg.replication_slots = frozenset(slot_name(member) for member in act.members)
    return True


def _apply_parameters(w: World, n: Node, act: a.ApplyClusterParameters, started: float) -> bool:
    """The settings file and a reload: the simulated server has them at once (none needs a restart here)."""
    if not n.pg.running:
        return False
    n.pg.cluster_parameters = act.parameters
    n.pg.cluster_pg_hba = act.pg_hba
    n.pg.cluster_use_slots = act.use_slots
    shown = ", ".join(f"{k}={v}" for k, v in act.parameters) or "none"
    w.trace.note(w.t, n.name, f"parameters: {shown}; pg_hba lines: {len(act.pg_hba)}")
    return True


HANDLERS: dict[type[Action], Callable[..., bool]] = {
    a.RaceForInitialize: _race_initialize,
    a.CancelInitialize: _cancel_initialize,
    a.SetInitializeKey: _set_initialize,
    a.AcquireLeaderKey: _acquire,
    a.RenewLeaderKey: _renew,
    a.ReleaseLeaderKey: _release,
    a.SetSyncStandby: _set_sync,
    a.PrepareSyncStandby: _prepare_sync,
    a.PublishMember: _publish_member,
    a.PublishLeaderOptime: _publish_optime,
    a.PublishHistory: _publish_history,
    a.ClearSwitchoverRequest: _clear_failover,
    a.PublishFailsafe: _publish_failsafe,
    a.InitDb: _initdb,
    a.CloneReplica: _clone,
    a.Reclone: _clone,
    a.StartPrimary: _start_primary,
    a.StartStandby: _start_standby,
    a.FollowLeader: _follow,
    a.StopPostgres: _stop,
    a.Promote: _promote,
    a.Demote: _demote,
    a.RefuseRequest: _nothing,
    a.RewindFromLeader: _rewind,
    a.EnsureReplicationSlots: _ensure_slots,
    a.ApplyClusterParameters: _apply_parameters,
    a.ArmWatchdog: _watchdog_arm,
    a.PingWatchdog: _watchdog_ping,
    a.DisarmWatchdog: _watchdog_disarm,
    a.RunCallback: _nothing,
}

DURATIONS_S: dict[type[Action], float] = {
    a.InitDb: 1.0,
    a.CloneReplica: 5.0,
    a.Reclone: 5.0,
    a.StartPrimary: 0.1,  # a stopped primary (after a crash: recovery first) up again: 0.05-0.10 s
    a.StartStandby: 1.5,
    a.FollowLeader: 0.2,
    a.StopPostgres: 0.5,
    a.Promote: 0.05,  # pg_ctl promote until pg_is_in_recovery() is false: 0.03-0.18 s, median 0.045 s
    a.RewindFromLeader: 1.0,
    a.RestartPrimary: 1.5,
    a.RestartStandby: 1.5,
    a.ArmWatchdog: 0.001,
    a.PingWatchdog: 0.001,
    a.DisarmWatchdog: 0.001,
}
