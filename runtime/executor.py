"""Carries out a decision's actions through the adapters, in order, stopping at the first that fails.

Each action type maps to one adapter call. Two checks belong to the driver, not the core: a StartPrimary or
Promote runs only if the lease is still valid *now* (the decision may be seconds old), and the start of each
successful acquire or renew is recorded as the lease renewal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlparse

from adapters.callbacks import CallbackRunner
from adapters.dcs import Dcs, MemberRecord, Outcome, Snapshot
from adapters.postgres.server import Postgres
from adapters.postgres.settings import ReplicaMethod
from adapters.postgres.values import Result, Upstream
from fsm import actions as a
from fsm.lease import lease_deadline_s
from fsm.observation import ClusterConfig, SyncState, Tags

log = logging.getLogger(__name__)


class Fence(Protocol):
    """The watchdog as the executor sees it (adapters.watchdog.Watchdog)."""

    def arm(self, deadline: float) -> bool: ...
    def ping(self, deadline: float) -> bool: ...
    def disarm(self) -> bool: ...


@dataclass
class Lease:
    """The agent's own lease bookkeeping: the start of its last successful acquire or renew."""

    renewed_at_s: float | None = None

    def deadline(self, config: ClusterConfig) -> float | None:
        return lease_deadline_s(self.renewed_at_s, config)


@dataclass
class Executor:
    name: str
    dcs: Dcs
    postgres: Postgres
    fence: Fence
    callbacks: CallbackRunner
    conn_url: str
    api_url: str
    tags: Tags = field(default_factory=Tags)
    clock: Callable[[], float] = time.monotonic
    lease: Lease = field(default_factory=Lease)

    def run(
        self, actions: tuple[a.Action, ...], snapshot: Snapshot | None, config: ClusterConfig
    ) -> tuple[frozenset[str], frozenset[str]]:
        """Run `actions` in order; returns the names of those that succeeded and of the one that failed (if any)."""
        succeeded: set[str] = set()
        for action in actions:
            name = type(action).__name__
            try:
                ok, detail = self._one(action, snapshot, config)
            except Exception as error:  # an adapter bug must not kill the HA loop; the next loop re-observes
                log.exception("%s raised", name)
                ok, detail = False, f"{type(error).__name__}: {error}"
            if not ok:
                log.warning("%s failed: %s", name, detail)
                return frozenset(succeeded), frozenset({name})
            succeeded.add(name)
        return frozenset(succeeded), frozenset()

    # --- one action -----------------------------------------------------------------------------------------

    def _one(self, action: a.Action, snapshot: Snapshot | None, config: ClusterConfig) -> tuple[bool, str]:
        handler = getattr(self, f"_{type(action).__name__}")
        result = handler(action, snapshot, config)
        if isinstance(result, Result):
            return result.ok, result.detail
        return bool(result), ""

    def _lease_valid_now(self, config: ClusterConfig) -> bool:
        deadline = self.lease.deadline(config)
        return deadline is not None and self.clock() < deadline

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

    def _RaceForInitialize(self, act: a.RaceForInitialize, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return _dcs(self.dcs.race_for_initialize())

    def _CancelInitialize(self, act: a.CancelInitialize, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return _dcs(self.dcs.cancel_initialize())

    def _SetInitializeKey(self, act: a.SetInitializeKey, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return _dcs(self.dcs.set_initialize(act.system_identifier))

    def _keep_lease(self, write: Callable[[], Outcome]) -> Result:
        started = self.clock()
        outcome = write()
        if outcome:
            self.lease.renewed_at_s = started  # the request's start: the DCS applied it no earlier
        return _dcs(outcome)

    def _AcquireLeaderKey(self, act: a.AcquireLeaderKey, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self._keep_lease(self.dcs.acquire_leader)

    def _RenewLeaderKey(self, act: a.RenewLeaderKey, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self._keep_lease(self.dcs.renew_leader)

    def _ReleaseLeaderKey(self, act: a.ReleaseLeaderKey, snapshot: Snapshot | None, config: ClusterConfig) -> bool:
        released = self.dcs.release_leader()
        if released is Outcome.UNAVAILABLE:
            return False
        self.lease.renewed_at_s = None  # released, or (CONFLICT) held by nobody or by another: not ours either way
        return True

    def _SetSyncStandby(self, act: a.SetSyncStandby, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
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

    def _PrepareSyncStandby(
        self, act: a.PrepareSyncStandby, snapshot: Snapshot | None, config: ClusterConfig
    ) -> Result:
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

    def _PublishMember(self, act: a.PublishMember, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        pg = self.postgres.observe()
        record = MemberRecord(
            self.name, self.conn_url, self.api_url, "running" if pg.running else "stopped", act.role,
            pg.wal_position, pg.timeline, self.tags,
        )  # fmt: skip
        return _dcs(self.dcs.publish_member(record))

    def _PublishLeaderOptime(
        self, act: a.PublishLeaderOptime, snapshot: Snapshot | None, config: ClusterConfig
    ) -> Result:
        return _dcs(self.dcs.publish_leader_optime(act.wal_position))

    def _PublishHistory(self, act: a.PublishHistory, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return _dcs(self.dcs.write_history(act.history))

    def _ClearSwitchoverRequest(
        self, act: a.ClearSwitchoverRequest, snapshot: Snapshot | None, config: ClusterConfig
    ) -> Result:
        return _dcs(self.dcs.clear_failover())

    # Postgres ---------------------------------------------------------------------------------------------------

    def _InitDb(self, act: a.InitDb, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self.postgres.bootstrap()

    def _methods(self, names: tuple[str, ...]) -> list[ReplicaMethod]:
        """The configured replica methods the action names, in the action's order."""
        configured = {method.name: method for method in self.postgres.settings.create_replica_methods}
        return [configured.get(name, ReplicaMethod(name)) for name in names]

    def _CloneReplica(self, act: a.CloneReplica, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        methods = self._methods(act.methods)
        return self._needs_upstream(act.source, snapshot, lambda upstream: self.postgres.clone(upstream, methods))

    def _Reclone(self, act: a.Reclone, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        methods = self._methods(act.methods)
        return self._needs_upstream(act.source, snapshot, lambda upstream: self.postgres.reclone(upstream, methods))

    def _StartPrimary(self, act: a.StartPrimary, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        if not self._lease_valid_now(config):
            return Result(False, "the lease ran out before Postgres could start as primary")
        return self.postgres.start_primary()

    def _StartStandby(self, act: a.StartStandby, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        if act.leader is None:
            return self.postgres.start_standby(None)
        return self._needs_upstream(act.leader, snapshot, self.postgres.start_standby)

    def _FollowLeader(self, act: a.FollowLeader, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self._needs_upstream(act.leader, snapshot, self.postgres.follow)

    def _StopPostgres(self, act: a.StopPostgres, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self.postgres.stop(act.mode)

    def _Promote(self, act: a.Promote, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        if not self._lease_valid_now(config):
            return Result(False, "the lease ran out before the promote could run")
        return self.postgres.promote()

    def _Demote(self, act: a.Demote, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self.postgres.demote(act.mode)

    def _RewindFromLeader(self, act: a.RewindFromLeader, snapshot: Snapshot | None, config: ClusterConfig) -> Result:
        return self._needs_upstream(act.leader, snapshot, self.postgres.rewind)

    def _EnsureReplicationSlots(
        self, act: a.EnsureReplicationSlots, snapshot: Snapshot | None, config: ClusterConfig
    ) -> Result:
        return self.postgres.ensure_slots(act.members)

    # watchdog and callbacks ---------------------------------------------------------------------------------

    def _ArmWatchdog(self, act: a.ArmWatchdog, snapshot: Snapshot | None, config: ClusterConfig) -> bool:
        deadline = self.lease.deadline(config)
        return deadline is not None and self.fence.arm(deadline)

    def _PingWatchdog(self, act: a.PingWatchdog, snapshot: Snapshot | None, config: ClusterConfig) -> bool:
        deadline = self.lease.deadline(config)
        return deadline is not None and self.fence.ping(deadline)

    def _DisarmWatchdog(self, act: a.DisarmWatchdog, snapshot: Snapshot | None, config: ClusterConfig) -> bool:
        return self.fence.disarm()

    def _RunCallback(self, act: a.RunCallback, snapshot: Snapshot | None, config: ClusterConfig) -> bool:
        self.callbacks.fire(act.event, act.role)
        return True  # a callback never holds up the HA loop; its own failures are logged


def _dcs(outcome: Outcome) -> Result:
    """A DCS write's outcome as a Result whose failure says how it failed: another member's write won (conflict) or
    the store did not answer within retry_timeout (unavailable)."""
    return Result(bool(outcome), "" if outcome else f"DCS: {outcome.value}")
