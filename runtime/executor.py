"""Carries out one action through the adapters: an explicit table from action type to handler.

The node core (`fsm.node`) decides which action runs when: its preconditions (a valid lease for StartPrimary and
Promote) are checked before the executor is called, and what a success means for the lease (a renew's start time,
a release) is recorded in the core's memory from the action's outcome. The handlers only do the side effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from adapters.dcs import MemberRecord, Outcome, Snapshot
from adapters.postgres.settings import ReplicaMethod
from adapters.postgres.values import ClusterSettings, Result, Upstream
from fsm import actions as a
from fsm.node import Memory, failsafe_timeout_s, lease_deadline
from fsm.observation import ClusterConfig, SyncState, Tags
from runtime.peers import PeerClient
from runtime.ports import CallbacksPort, DcsPort, FencePort, PeersPort, PostgresPort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a handler may need besides its action: the DCS snapshot of the turn, its settings, the core's memory."""

    snapshot: Snapshot | None
    config: ClusterConfig
    memory: Memory

    def lease_deadline(self) -> float | None:
        return lease_deadline(self.memory, self.config)


@dataclass
class Executor:
    name: str
    dcs: DcsPort
    postgres: PostgresPort
    fence: FencePort
    callbacks: CallbacksPort
    conn_url: str
    api_url: str
    tags: Tags = field(default_factory=Tags)
    replica_methods: tuple[ReplicaMethod, ...] = (ReplicaMethod("basebackup"),)  # as configured, with their scripts
    clock: Callable[[], float] = time.monotonic
    scheduled_restart: dict[str, Any] | None = None  # Patroni's member-key field, set by the agent while one waits
    bootstrap_config: dict[str, Any] = field(default_factory=dict)  # `bootstrap.dcs`: the new cluster's config key
    peers: PeersPort = field(default_factory=PeerClient)  # the other members' REST APIs, with this node's login

    def run(
        self, action: a.Action, snapshot: Snapshot | None, config: ClusterConfig, memory: Memory
    ) -> tuple[bool, str]:
        """Carry out `action`: whether it succeeded, and what the adapter said. Never raises: an adapter bug is
        logged as a failure, and the next turn observes afresh."""
        name = type(action).__name__
        try:
            result = HANDLERS[type(action)](self, action, Context(snapshot, config, memory))
            ok, detail = (result.ok, result.detail) if isinstance(result, Result) else (bool(result), "")
        except Exception as error:  # an adapter bug must not kill the HA loop; the next loop re-observes
            log.exception("%s raised", name)
            ok, detail = False, f"{type(error).__name__}: {error}"
        if not ok:
            log.warning("%s failed: %s", name, detail)
        return ok, detail

    # --- the handlers, one per action type (HANDLERS below) --------------------------------------------------

    def _upstream(self, member: str, snapshot: Snapshot | None) -> Upstream | None:
        view = snapshot.view if snapshot else None
        found = next((m for m in view.members if m.name == member), None) if view else None
        if found is None or not found.conn_url:
            return None
        url = urlparse(found.conn_url)
        return Upstream(member, url.hostname or "127.0.0.1", url.port or 5432)

    def _needs_upstream(self, member: str, snapshot: Snapshot | None, then: Callable[[Upstream], Result]) -> Result:
        upstream = self._upstream(member, snapshot)
        if upstream is None:
            return Result(False, f"member {member!r} has published no conn_url")
        return then(upstream)

    # DCS --------------------------------------------------------------------------------------------------------

    def race_for_initialize(self, act: a.RaceForInitialize, ctx: Context) -> Result:
        return _dcs(self.dcs.race_for_initialize())

    def cancel_initialize(self, act: a.CancelInitialize, ctx: Context) -> Result:
        return _dcs(self.dcs.cancel_initialize())

    def set_initialize_key(self, act: a.SetInitializeKey, ctx: Context) -> Result:
        """The cluster exists once the key holds its system identifier; its config key starts as `bootstrap.dcs`
        (only when absent: an operator's config, or another member's, stands)."""
        result = _dcs(self.dcs.set_initialize(act.system_identifier))
        if result and self.bootstrap_config:
            written = self.dcs.set_config(self.bootstrap_config, None)
            if written is not Outcome.DONE and written is not Outcome.CONFLICT:
                log.warning(
                    "bootstrap.dcs not written to the config key (%s): write it with PATCH /config", written.value
                )
        return result

    def acquire_leader_key(self, act: a.AcquireLeaderKey, ctx: Context) -> Result:
        return _dcs(self.dcs.acquire_leader())

    def renew_leader_key(self, act: a.RenewLeaderKey, ctx: Context) -> Result:
        return _dcs(self.dcs.renew_leader())

    def release_leader_key(self, act: a.ReleaseLeaderKey, ctx: Context) -> bool:
        # Released, or (CONFLICT) held by nobody or by another: not ours either way. Unavailable: still ours.
        return self.dcs.release_leader() is not Outcome.UNAVAILABLE

    def set_sync_standby(self, act: a.SetSyncStandby, ctx: Context) -> Result:
        # Removing: the key first. Adding: the key {me, nobody} first when it names another standby or another
        # leader (clear_first), then Postgres, then the key once the standby is sync. Either way the key never
        # names a standby that may miss acknowledged commits.
        if act.name is None or act.clear_first:
            cleared = self._write_sync(None)
            if not cleared:
                return cleared
        if act.name is None:
            return self.postgres.set_synchronous_standby(None)
        result = self.postgres.set_synchronous_standby(act.name)
        if not result:
            return result
        written = self._write_sync(act.name)
        return result if written else written

    def prepare_sync_standby(self, act: a.PrepareSyncStandby, ctx: Context) -> Result:
        # Before Postgres takes writes. Naming nobody: the key {me, nobody} first, so that no standby may be
        # promoted over this node's coming commits; if it cannot be written the action fails and Promote does not
        # run. Naming the key's standby: only the setting changes, so commits wait for it from the first one.
        if act.name is None:
            cleared = self._write_sync(None)
            if not cleared:
                return cleared
        return self.postgres.prepare_synchronous_standby(act.name)

    def _write_sync(self, standby: str | None) -> Result:
        written = _dcs(self.dcs.write_sync(SyncState(self.name, standby)))
        if written:
            return written
        return Result(False, f"could not write the sync key {{{self.name}, {standby or 'nobody'}}}: {written.detail}")

    def publish_member(self, act: a.PublishMember, ctx: Context) -> Result:
        pg = self.postgres.observe()
        standby = pg.running and pg.in_recovery
        record = MemberRecord(
            self.name, self.conn_url, self.api_url, "running" if pg.running else "stopped", act.role,
            pg.wal_position, pg.timeline, self.tags, self.scheduled_restart, pg.pending_restart,
            receive_lsn=pg.wal_received if standby else None, replay_lsn=pg.wal_replayed if standby else None,
            replication_state=pg.replication_state, pause=act.paused,
        )  # fmt: skip
        return _dcs(self.dcs.publish_member(record))

    def publish_leader_optime(self, act: a.PublishLeaderOptime, ctx: Context) -> Result:
        return _dcs(self.dcs.publish_leader_optime(act.wal_position))

    def publish_history(self, act: a.PublishHistory, ctx: Context) -> Result:
        return _dcs(self.dcs.write_history(act.history))

    def clear_switchover_request(self, act: a.ClearSwitchoverRequest, ctx: Context) -> Result:
        return _dcs(self.dcs.clear_failover())

    def publish_failsafe(self, act: a.PublishFailsafe, ctx: Context) -> Result:
        return _dcs(self.dcs.write_failsafe(act.members))

    # the other members ------------------------------------------------------------------------------------------

    def confirm_failsafe(self, act: a.ConfirmFailsafe, ctx: Context) -> Result:
        me = {"name": self.name, "conn_url": self.conn_url, "api_url": self.api_url}
        refused = self.peers.confirm_failsafe(act.members, me, failsafe_timeout_s(ctx.config))
        return Result(not refused, f"failsafe not accepted by {', '.join(sorted(refused))}" if refused else "")

    # Postgres ---------------------------------------------------------------------------------------------------

    def init_db(self, act: a.InitDb, ctx: Context) -> Result:
        return self.postgres.bootstrap()

    def _methods(self, names: tuple[str, ...]) -> list[ReplicaMethod]:
        """The configured replica methods the action names, in the action's order."""
        configured = {method.name: method for method in self.replica_methods}
        return [configured.get(name, ReplicaMethod(name)) for name in names]

    def clone_replica(self, act: a.CloneReplica, ctx: Context) -> Result:
        methods = self._methods(act.methods)
        return self._needs_upstream(act.source, ctx.snapshot, lambda upstream: self.postgres.clone(upstream, methods))

    def reclone(self, act: a.Reclone, ctx: Context) -> Result:
        methods = self._methods(act.methods)
        return self._needs_upstream(act.source, ctx.snapshot, lambda upstream: self.postgres.reclone(upstream, methods))

    def start_primary(self, act: a.StartPrimary, ctx: Context) -> Result:
        return self.postgres.start_primary()

    def start_standby(self, act: a.StartStandby, ctx: Context) -> Result:
        if act.upstream is None:
            return self.postgres.start_standby(None)
        return self._needs_upstream(act.upstream, ctx.snapshot, self.postgres.start_standby)

    def follow_leader(self, act: a.FollowLeader, ctx: Context) -> Result:
        if act.upstream is None:
            return self.postgres.follow(None)
        return self._needs_upstream(act.upstream, ctx.snapshot, self.postgres.follow)

    def stop_postgres(self, act: a.StopPostgres, ctx: Context) -> Result:
        return self.postgres.stop(act.mode)

    def promote(self, act: a.Promote, ctx: Context) -> Result:
        return self.postgres.promote()

    def demote(self, act: a.Demote, ctx: Context) -> Result:
        return self.postgres.demote(act.mode)

    def restart_postgres(self, act: a.RestartPrimary, ctx: Context) -> Result:
        return self.postgres.restart(act.timeout_s)

    def refuse_request(self, act: a.RefuseRequest, ctx: Context) -> bool:
        return True  # the answer is the decision itself: the REST API reads the reason off the turn

    def rewind_from_leader(self, act: a.RewindFromLeader, ctx: Context) -> Result:
        return self._needs_upstream(act.leader, ctx.snapshot, self.postgres.rewind)

    def ensure_replication_slots(self, act: a.EnsureReplicationSlots, ctx: Context) -> Result:
        return self.postgres.ensure_slots(act.members)

    def apply_cluster_parameters(self, act: a.ApplyClusterParameters, ctx: Context) -> Result:
        return self.postgres.apply_cluster_settings(ClusterSettings(act.parameters, act.pg_hba, act.use_slots))

    # watchdog and callbacks ---------------------------------------------------------------------------------

    def arm_watchdog(self, act: a.ArmWatchdog, ctx: Context) -> bool:
        deadline = ctx.lease_deadline()
        return deadline is not None and self.fence.arm(deadline)

    def ping_watchdog(self, act: a.PingWatchdog, ctx: Context) -> bool:
        deadline = ctx.lease_deadline()
        return deadline is not None and self.fence.ping(deadline)

    def disarm_watchdog(self, act: a.DisarmWatchdog, ctx: Context) -> bool:
        return self.fence.disarm()

    def run_callback(self, act: a.RunCallback, ctx: Context) -> bool:
        self.callbacks.fire(act.event, act.role)
        return True  # a callback never holds up the HA loop; its own failures are logged


def _dcs(outcome: Outcome) -> Result:
    """A DCS write's outcome as a Result whose failure says how it failed: another member's write won (conflict) or
    the store did not answer within retry_timeout (unavailable)."""
    return Result(bool(outcome), "" if outcome else f"DCS: {outcome.value}")


Handler = Callable[[Executor, Any, Context], "Result | bool"]

# Every action type the rule table can emit, and the handler that carries it out (a test checks none is missing).
HANDLERS: dict[type[a.Action], Handler] = {
    a.RaceForInitialize: Executor.race_for_initialize,
    a.CancelInitialize: Executor.cancel_initialize,
    a.SetInitializeKey: Executor.set_initialize_key,
    a.AcquireLeaderKey: Executor.acquire_leader_key,
    a.RenewLeaderKey: Executor.renew_leader_key,
    a.ReleaseLeaderKey: Executor.release_leader_key,
    a.SetSyncStandby: Executor.set_sync_standby,
    a.PrepareSyncStandby: Executor.prepare_sync_standby,
    a.PublishMember: Executor.publish_member,
    a.PublishLeaderOptime: Executor.publish_leader_optime,
    a.PublishHistory: Executor.publish_history,
    a.ClearSwitchoverRequest: Executor.clear_switchover_request,
    a.PublishFailsafe: Executor.publish_failsafe,
    a.ConfirmFailsafe: Executor.confirm_failsafe,
    a.InitDb: Executor.init_db,
    a.CloneReplica: Executor.clone_replica,
    a.Reclone: Executor.reclone,
    a.StartPrimary: Executor.start_primary,
    a.StartStandby: Executor.start_standby,
    a.FollowLeader: Executor.follow_leader,
    a.StopPostgres: Executor.stop_postgres,
    a.Promote: Executor.promote,
    a.Demote: Executor.demote,
    a.RestartPrimary: Executor.restart_postgres,
    a.RestartStandby: Executor.restart_postgres,
    a.RefuseRequest: Executor.refuse_request,
    a.RewindFromLeader: Executor.rewind_from_leader,
    a.EnsureReplicationSlots: Executor.ensure_replication_slots,
    a.ApplyClusterParameters: Executor.apply_cluster_parameters,
    a.ArmWatchdog: Executor.arm_watchdog,
    a.PingWatchdog: Executor.ping_watchdog,
    a.DisarmWatchdog: Executor.disarm_watchdog,
    a.RunCallback: Executor.run_callback,
}
