"""The one DCS interface the agent uses, and the failure policy both backends share.

A backend (etcd, ZooKeeper) implements a handful of key primitives on paths relative to the scope and raises
`Unavailable` for anything that means "the store did not answer" (timeout, refused connection, lost session, no
member left). `Dcs` turns those primitives into the operations the decision core's actions name, retries an
unavailable store with backoff until `retry_timeout` has passed, and reports every outcome as data: no exception
leaves a public method. A compare-and-swap that loses is a `CONFLICT`, never retried: somebody else's write won.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from fsm.observation import FailoverRequest, FailsafeView, SyncState, TimelineSwitch

from . import layout
from .layout import MemberRecord, Node, Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")


class Unavailable(Exception):
    """The store did not answer this request (a backend raises it; `Dcs` never lets it out)."""


class _Unknown:
    """How the leader key looked is unknown (this member just wrote it): a wait watches from now."""


UNKNOWN = _Unknown()


class Outcome(StrEnum):
    DONE = "done"
    CONFLICT = "conflict"  # a compare-and-swap or create-if-absent lost: the key holds something else
    UNAVAILABLE = "unavailable"  # no answer within retry_timeout

    def __bool__(self) -> bool:
        return self is Outcome.DONE


class Dcs(ABC):
    """Cluster state in a distributed store, under `/<namespace>/<scope>/`, for the member `name`."""

    def __init__(
        self, name: str, scope: str, namespace: str = "service", ttl_s: float = 30.0, retry_timeout_s: float = 10.0
    ) -> None:
        self.name = name
        self.scope = scope
        self.root = layout.scope_path(namespace, scope)
        self.ttl_s = ttl_s
        self.retry_timeout_s = retry_timeout_s
        self._give_up_at: float | None = None
        self._local = threading.local()  # the deadline of the operation this thread runs (agent loop, REST API)
        self._leader_seen: Node | _Unknown | None = UNKNOWN  # the leader key as the last read_cluster saw it

    # --- primitives a backend implements (paths relative to the scope; raise Unavailable) -------------------

    @abstractmethod
    def _load(self) -> dict[str, Node]:
        """Every key under the scope, in one consistent read where the store allows it."""

    @abstractmethod
    def _create(self, key: str, value: str, lease: bool = False) -> bool:
        """Create `key` if absent; False if it exists. `lease`: expires with the TTL (etcd) or the session (ZK)."""

    @abstractmethod
    def _put(self, key: str, value: str, lease: bool = False) -> None:
        """Write `key` whatever it holds."""

    @abstractmethod
    def _swap(
        self,
        key: str,
        value: str,
        *,
        prev_value: str | None = None,
        prev_version: int | None = None,
        lease: bool = False,
    ) -> bool:
        """Replace `key` only if it holds `prev_value` / has `prev_version`; False otherwise (or if absent)."""

    @abstractmethod
    def _delete(self, key: str, *, prev_value: str | None = None) -> bool:
        """Delete `key` (only if it holds `prev_value`, when given); False if absent or holding something else."""

    @abstractmethod
    def _wait(self, key: str, timeout_s: float, since: Node | _Unknown | None) -> bool:
        """Block until `key` changes or `timeout_s` passes; True if it changed. `since` is the key as the last read
        saw it (None: absent): if it already differs when the watch is set, return True at once."""

    @abstractmethod
    def _renew_leader(self) -> bool:
        """Refresh this member's hold on the leader key; False if another member holds it or nobody does."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. On etcd a held leader key then expires with its TTL; on ZooKeeper closing ends
        the session, so the leader and member keys vanish at once: close only after writes stopped."""

    def set_ttl(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s

    def lease_ttl_s(self) -> float:
        """How long the store keeps the leader key after the leader's last successful write, at the least: the
        leader's own deadline must not be later (on ZooKeeper the granted session timeout may be shorter)."""
        return self.ttl_s

    # --- the failure policy ----------------------------------------------------------------------------------

    def _time_left(self) -> float:
        """Seconds left of the current operation's retry_timeout: a backend bounds each request by it, so that the
        last attempt cannot run past the deadline (the lease argument counts on retry_timeout)."""
        deadline = getattr(self._local, "deadline", None)
        return math.inf if deadline is None else max(0.0, deadline - time.monotonic())

    def give_up_at(self, deadline_s: float | None) -> None:
        """From now on, no operation runs past `deadline_s` (time.monotonic()), however much of retry_timeout is
        left: the agent sets its lease deadline here while it holds the lease. None: retry_timeout alone."""
        self._give_up_at = deadline_s

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T | None:
        """Run `attempt` until it answers or retry_timeout passes (or the `give_up_at` deadline comes first); None
        when the store stayed unavailable."""
        self._local.deadline = min(time.monotonic() + self.retry_timeout_s, self._give_up_at or math.inf)
        pause = 0.05
        try:
            while True:
                try:
                    return attempt()
                except Unavailable as error:
                    left = self._time_left()
                    if left <= 0:
                        log.warning("DCS unavailable for %s after %.1f s: %s", what, self.retry_timeout_s, error)
                        return None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 1.0)
        finally:
            self._local.deadline = None

    def _outcome(self, what: str, attempt: Callable[[], bool | None]) -> Outcome:
        answer = self._retrying(what, lambda: attempt() is not False)
        if answer is None:
            return Outcome.UNAVAILABLE
        return Outcome.DONE if answer else Outcome.CONFLICT

    # --- what the agent calls --------------------------------------------------------------------------------

    def read_cluster(self) -> Snapshot | None:
        """The whole cluster in one read; None when the store is unavailable (the observation's `dcs=None`)."""
        nodes = self._retrying("read", self._load)
        if nodes is None:
            return None
        self._leader_seen = nodes.get(layout.LEADER)
        snapshot = layout.decode(nodes)
        for problem in snapshot.problems:
            log.warning("DCS value ignored: %s", problem)
        return snapshot

    def race_for_initialize(self) -> Outcome:
        return self._outcome("initialize race", lambda: self._create(layout.INITIALIZE, ""))

    def cancel_initialize(self) -> Outcome:
        return self._outcome("initialize cancel", lambda: self._delete(layout.INITIALIZE, prev_value=""))

    def set_initialize(self, system_identifier: str) -> Outcome:
        return self._outcome("initialize", lambda: self._swap(layout.INITIALIZE, system_identifier, prev_value=""))

    def _writing_leader(self, what: str, attempt: Callable[[], bool | None]) -> Outcome:
        # This member's own write changes the key after the last read: that change must not wake its next wait.
        self._leader_seen = UNKNOWN
        return self._outcome(what, attempt)

    def acquire_leader(self) -> Outcome:
        """Create the leader key naming this member; if it already does, refresh it instead."""
        return self._writing_leader(
            "leader acquire", lambda: self._create(layout.LEADER, self.name, lease=True) or self._renew_leader()
        )

    def renew_leader(self) -> Outcome:
        return self._writing_leader("leader renew", self._renew_leader)

    def release_leader(self) -> Outcome:
        return self._writing_leader("leader release", lambda: self._delete(layout.LEADER, prev_value=self.name))

    def publish_member(self, record: MemberRecord) -> Outcome:
        key = layout.MEMBERS + record.name
        return self._outcome("member", lambda: self._put(key, record.to_json(), lease=True))

    def publish_leader_optime(self, wal_position: int) -> Outcome:
        return self._outcome("status", lambda: self._put(layout.STATUS, layout.encode_status(wal_position)))

    def write_sync(self, sync: SyncState) -> Outcome:
        return self._outcome("sync", lambda: self._put(layout.SYNC, layout.encode_sync(sync)))

    def write_failsafe(self, members: FailsafeView) -> Outcome:
        """Write the `failsafe` key whole: every member (name, api_url) a leader in failsafe mode must reach."""
        value = layout.encode_failsafe(members)
        return self._outcome("failsafe", lambda: self._put(layout.FAILSAFE, value))

    def write_history(self, history: tuple[TimelineSwitch, ...]) -> Outcome:
        """Write the leader's whole timeline history: each promotion appends its line to the previous one."""
        value = layout.encode_history(history, datetime.now(UTC).isoformat())
        return self._outcome("history", lambda: self._put(layout.HISTORY, value))

    def request_failover(self, request: FailoverRequest) -> Outcome:
        value = layout.encode_failover(request)
        return self._outcome("failover request", lambda: self._put(layout.FAILOVER, value))

    def clear_failover(self) -> Outcome:
        return self._outcome("failover clear", lambda: self._delete(layout.FAILOVER) or True)

    def set_config(self, config: dict[str, Any], version: int | None) -> Outcome:
        """Compare-and-set the cluster config on the version last read (None: create it only if absent)."""
        value = layout.encode_config(config)
        if version is None:
            return self._outcome("config", lambda: self._create(layout.CONFIG, value))
        return self._outcome("config", lambda: self._swap(layout.CONFIG, value, prev_version=version))

    def wait_for_leader_change(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`, waking early when the leader key changes (True) or expires, including a change
        since the last `read_cluster` (which the agent's actions may have taken seconds after)."""
        deadline = time.monotonic() + timeout_s
        try:
            return self._wait(layout.LEADER, timeout_s, self._leader_seen)
        except Unavailable:
            time.sleep(max(0.0, deadline - time.monotonic()))  # the loop's own pace, not a busy retry
            return False
