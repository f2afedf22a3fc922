"""The invariants of the architecture guide (section 4), checked after every event of a simulation.

1. no_split_brain: at no instant do two Postgres servers accept writes.
2. lease_agreement: a server accepts writes only while the DCS leader key names it (plus a bounded grace for the
   demotion already under way when the key went), or, in failsafe mode, while the key names nobody and less than
   ttl has passed since it sent the POST /failsafe every member it asked accepted (`failsafe_leads`).
3. lag_limit: nobody is promoted whose WAL lags the leader's last published position by more than the limit.
4. sync_durability: in synchronous mode no acknowledged commit is missing from a newly promoted primary, and
   at every instant the standby the `sync` key names holds every commit its leader acknowledged (the key is what
   lets that standby be promoted).
5. timeline_sanity: no standby streams WAL whose history diverged from its own (checked where WAL flows).
6. liveness: after the final heal, a writable leader serves clients within `liveness_bound_s`.
7. dcs_outage: a server whose node lost the DCS accepts no writes `ttl` after the loss, but in failsafe mode on
   the word of its members as in 2.
8. sync_named: in synchronous mode, once a standby has streamed from the writable leader for `sync_naming_bound_s`
   with both agents running and reaching the DCS, the leader's synchronous_standby_names names a standby (a liveness
   check of the sync rows: a leader that keeps naming nobody acknowledges every commit alone; the `sync` key follows
   once that standby holds every acknowledged commit, as 4 requires).
A violation stops the run: the trace up to it is the counterexample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsm.states import State

if TYPE_CHECKING:
    from model.world import Node, World

DEMOTION_GRACE_S = 1.0  # the slowest demotion in the model (graceful) finishes within this


def liveness_bound_s(world: World) -> float:
    """ttl (the old lease runs out) + loop_wait and a DCS timeout (the next loop notices) + starting, cloning or
    rewinding a node and promoting it."""
    config = world.config
    return config.ttl_s + config.loop_wait_s + 2 * config.retry_timeout_s + 15.0


SYNC_NAMING_LOOPS = 3  # the standby publishes its member key, the leader's next turn names it, one try more


def sync_naming_bound_s(leader: Node) -> float:
    """How long a standby may stream from `leader` before the leader must name a synchronous standby: the standby's
    next turn publishes its member key, the leader's next turn names it, and one more turn for a try that failed
    (the standby not caught up yet); each within the loop_wait the leader runs with."""
    return SYNC_NAMING_LOOPS * leader.config.loop_wait_s


class Checker:
    def __init__(self, world: World) -> None:
        self.world = world
        self.key_lost_at: dict[str, float] = {}  # node -> when the leader key stopped naming it
        self.dcs_lost_at: dict[str, float] = {}  # node -> since when it cannot reach the DCS
        self.holder: str | None = None
        self._expiry_pending: float | None = None
        self._writable: list[Node] | None = None
        self.healed_at: float | None = None
        self.heals = 0  # heals and voiding faults so far: a liveness check holds only for the latest heal
        self.served_after_heal = False
        self.unavailable_since: float | None = 0.0
        self.serving: str | None = None
        self.last_server: str | None = None
        self.windows: list[tuple[float, float, str | None, str]] = []  # start, end, from, to
        self.streaming_since: dict[tuple[str, str], float] = {}  # (leader, standby) -> since when it streams (8.)

    def violation(self, node: Node | None, invariant: str, detail: str) -> None:
        if not self.world.trace.violations:
            self.world.trace.violation(self.world.t, node.name if node else None, invariant, detail)

    # --- hooks the world and the effects call ---------------------------------------------------

    def leader_key_written(self) -> None:
        """Keep one event pending at the moment the key could expire (its TTL, or its holder's ZooKeeper
        session), so that the expiry is noticed then and not at some later event."""
        expiry = self.world.dcs.expires_at("leader")
        if expiry is not None and expiry != self._expiry_pending:
            self._expiry_pending = expiry
            self.world.at(expiry, self._expiry, expiry)

    def _expiry(self, expected: float) -> None:
        if expected == self._expiry_pending:
            self._expiry_pending = None
            self.world.dcs.expire(self.world.t)
            self.leader_key_written()

    def dcs_lost(self, node: Node) -> None:
        self.dcs_lost_at.setdefault(node.name, self.world.t)
        self.world.at(self.world.t + self.world.config.ttl_s + 1e-6, lambda: None)  # an event to check at
        self.leader_key_written()  # on ZooKeeper the lost session now decides when the key goes

    def dcs_back(self, node: Node) -> None:
        self.dcs_lost_at.pop(node.name, None)

    def healed(self) -> None:
        """Everything is repaired; the liveness clock starts once the last frozen agent thaws (a heal cannot
        un-freeze a paused process, it only stops freezing new ones)."""
        self.healed_at = self.world.t
        self.heals += 1  # a heal's promise is known by its number: two heals can share an instant
        self.served_after_heal = False
        thawed = max([self.world.t, *(node.paused_until for node in self.world.nodes.values())])
        self.world.at(thawed + liveness_bound_s(self.world), self._liveness, self.heals)

    def fault_injected(self) -> None:
        """A fault after a heal voids that heal's liveness promise (the next heal makes a new one)."""
        self.healed_at = None
        self.heals += 1

    def promoting(self, node: Node) -> None:
        world, data = self.world, node.pg.data
        assert data is not None
        published = world.dcs.get("status", world.t)
        limit = world.config.maximum_lag_on_failover_bytes
        if published is not None and published - data.wal > limit:
            self.violation(node, "lag_limit", f"promoted {published - data.wal} B behind the leader (limit {limit} B)")
        acked = world.acked.get(data.segment, 0)
        if world.config.synchronous_mode and acked > data.wal:
            self.violation(node, "sync_durability", f"{acked - data.wal} B of acknowledged commits missing")

    def _liveness(self, heal: int) -> None:
        if heal != self.heals:
            return
        if not self.served_after_heal and self.world.serving_primary() is None:
            bound = liveness_bound_s(self.world)
            self.violation(None, "liveness", f"no writable leader {bound:g} s after the heal")

    # --- after every event ----------------------------------------------------------------------

    def after_event(self) -> None:
        world, t = self.world, self.world.t
        holder = world.dcs.get("leader", t)
        if holder != self.holder:
            if self.holder is not None:
                self.key_lost_at[self.holder] = t
            self.holder = holder
            world.trace.leader_key.set(t, "holder", holder)
        writable = [n for n in world.nodes.values() if n.pg.writable]
        if writable != self._writable:
            self._writable = writable
            for node in world.nodes.values():
                world.trace.writable[node.name].set(t, "on", node in writable)
        self._track_service(t)
        if len(writable) > 1:
            self.violation(writable[1], "no_split_brain", f"{', '.join(n.name for n in writable)} all accept writes")
        for node in writable:
            lost = self.key_lost_at.get(node.name, t) if holder != node.name else t
            if t - lost > DEMOTION_GRACE_S and not self.failsafe_leads(node, holder):
                self.violation(node, "lease_agreement", f"accepts writes {t - lost:.3f} s after losing the leader key")
            since = self.dcs_lost_at.get(node.name)
            if since is not None and t - since > world.config.ttl_s and not self.failsafe_leads(node, holder):
                self.violation(node, "dcs_outage", f"still accepts writes {t - since:.3f} s after losing the DCS")
        if world.config.synchronous_mode:
            self._sync_standby_holds_acknowledged(t)
            self._sync_standby_named(t)
            for segment, fork in world.forks.items():
                if world.acked.get(segment, 0) > fork:
                    self.violation(
                        None,
                        "sync_durability",
                        f"commits acknowledged on timeline segment {segment} past its fork at {fork}",
                    )

    def failsafe_leads(self, node: Node, holder: str | None) -> bool:
        """In failsafe mode, `node` may write without the key while nobody else holds it, for ttl from the start of
        its last POST /failsafe that every member it asked accepted (each of them keeps out of a race that long)."""
        word = self.world.failsafe_word.get(node.name)
        if not node.config.failsafe_mode or word is None or holder not in (None, node.name):
            return False
        return self.world.t - word <= node.config.ttl_s

    def _sync_standby_holds_acknowledged(self, t: float) -> None:
        world = self.world
        sync = world.dcs.get("sync", t)
        leader = world.nodes.get(sync.leader or "") if sync else None
        standby = world.nodes.get(sync.sync_standby or "") if sync else None
        if leader is None or standby is None or leader.pg.data is None:
            return
        data = leader.pg.data
        acked = world.acked.get(data.segment, 0)
        start = data.past[-1][1] if data.past else 0  # where the leader's timeline began
        if acked <= start:
            return
        held = standby.pg.data.reach(data.segment) if standby.pg.data else None
        if held is None or held < acked:
            missing = acked - (held if held is not None else start)
            self.violation(
                standby,
                "sync_durability",
                f"the sync key names {standby.name}, which lacks {missing} B its leader {leader.name} acknowledged",
            )

    def _sync_standby_named(self, t: float) -> None:
        """Invariant 8: a standby that has streamed from the writable leader for `sync_naming_bound_s`, both agents
        running (alive, not frozen) and reaching the DCS, gets the leader to name a synchronous standby."""
        world, streaming = self.world, {}
        for leader in world.nodes.values():
            if not self._manages_sync(leader, t) or leader.state is not State.LEADER or not leader.pg.writable:
                continue
            for standby in world.nodes.values():
                eligible = self._manages_sync(standby, t) and not standby.tags.nosync
                if standby.pg.streaming_from == leader.name and eligible:
                    pair = (leader.name, standby.name)  # checked at the events that follow (every turn is one)
                    streaming[pair] = self.streaming_since.get(pair, t)
        self.streaming_since = streaming
        for (name, standby), since in sorted(streaming.items()):
            leader = world.nodes[name]
            bound = sync_naming_bound_s(leader)
            if t - since > bound and leader.pg.sync_standby is None:
                detail = f"{standby} has streamed from it for {t - since:.3f} s (> {bound:g} s), the DCS up"
                self.violation(leader, "sync_named", f"{detail}: it names no synchronous standby")
                return

    def _manages_sync(self, node: Node, t: float) -> bool:
        """The node's agent takes its turns with the DCS: alive, not frozen, the DCS up and reachable, and the
        cluster not paused (maintenance mode leaves Postgres alone)."""
        return node.alive and not node.paused(t) and self.world.dcs_ok(node) and not node.config.pause

    def _track_service(self, t: float) -> None:
        """Record each window in which no node served writes, and who served before and after it."""
        serving = self.world.serving_primary()
        name = serving.name if serving else None
        if name == self.serving:
            return
        if name is None:
            self.unavailable_since = t
        else:
            self.served_after_heal = self.served_after_heal or self.healed_at is not None
            if self.unavailable_since is not None:
                self.windows.append((self.unavailable_since, t, self.last_server, name))
                self.unavailable_since = None
            self.last_server = name
        self.serving = name
