"""A simulated DCS with etcd v2's or ZooKeeper's lease semantics, on the simulation's own clock.

etcd: keys carry a TTL and expire on the DCS's clock; create-if-absent, compare-and-swap and compare-and-delete
are atomic. ZooKeeper: the leader and member keys are ephemeral nodes owned by a client session, and a session
expires after the last contact of its client (a live, connected agent keeps it alive by heartbeats) by the
timeout the server grants: the `ttl_s` asked for, clamped to the server's maxSessionTimeout.
Every operation takes the time `t` at which the DCS applies it; reachability and latency are the network's job.
The `failsafe` key holds Patroni's `{name: api_url}` mapping; the view shows it as sorted (name, api_url) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsm.observation import ClusterView, LeaderKey

EPHEMERAL = ("leader", "members/")  # what ZooKeeper binds to the writer's session


@dataclass
class Entry:
    value: Any
    version: int
    expires_at: float | None = None  # etcd TTL
    owner: str | None = None  # ZooKeeper session owner


class SimDCS:
    def __init__(self, kind: str, ttl_s: float, max_session_s: float = 40.0) -> None:
        if kind not in ("etcd", "zookeeper"):
            raise ValueError(f"unknown DCS kind {kind!r}")
        self.kind = kind
        self.ttl_s = ttl_s  # what the writers ask for: the TTL of etcd's keys, ZooKeeper's session timeout
        self.max_session_s = max_session_s  # ZooKeeper's maxSessionTimeout (20 x tickTime: 40 s by default)
        self.up = True
        self.keys: dict[str, Entry] = {}
        self.index = 0  # bumped by every change, like etcd's modifiedIndex
        self.last_contact: dict[str, float] = {}  # ZooKeeper: session owner -> last heartbeat
        self._view: tuple[int, ClusterView] | None = None
        # Nothing expires before this (heartbeats only push expiries later, so it may be early, never late).
        self._next_expiry = float("inf")

    # --- expiry ---------------------------------------------------------------------------------

    def lease_ttl_s(self) -> float:
        """How long the leader key outlives its holder's last write or contact: etcd's TTL, ZooKeeper's granted
        session timeout (the adapters' `lease_ttl_s`)."""
        return min(self.ttl_s, self.max_session_s) if self.kind == "zookeeper" else self.ttl_s

    def session_expiry(self, owner: str) -> float:
        return self.last_contact.get(owner, float("-inf")) + self.lease_ttl_s()

    def expires_at(self, key: str) -> float | None:
        entry = self.keys.get(key)
        if entry is None:
            return None
        if entry.owner is not None:
            return self.session_expiry(entry.owner)
        return entry.expires_at

    def expire(self, t: float) -> bool:
        """Drop what expired by `t`; True if the leader key went."""
        if t < self._next_expiry:
            return False
        expiries = {k: at for k in self.keys if (at := self.expires_at(k)) is not None}
        gone = [k for k, at in expiries.items() if at <= t]
        for key in gone:
            del self.keys[key]
        if gone:
            self.index += 1
        self._next_expiry = min((at for at in expiries.values() if at > t), default=float("inf"))
        return "leader" in gone

    def heartbeat(self, owner: str, t: float) -> None:
        """A ZooKeeper client's session ping; after an expiry it opens a new session without its old ephemeral
        nodes. A no-op on etcd, whose keys live by their TTL alone."""
        if self.kind == "zookeeper":
            self.expire(t)
            self.last_contact[owner] = t

    # --- operations -----------------------------------------------------------------------------

    def _write(self, key: str, value: Any, t: float, ttl: bool, owner: str | None) -> None:
        self.index += 1
        if self.kind == "zookeeper" and key.startswith(EPHEMERAL):
            self.keys[key] = Entry(value, self.index, owner=owner)
        else:
            self.keys[key] = Entry(value, self.index, expires_at=t + self.ttl_s if ttl else None)
        expiry = self.expires_at(key)
        if expiry is not None:
            self._next_expiry = min(self._next_expiry, expiry)

    def get(self, key: str, t: float) -> Any:
        self.expire(t)
        entry = self.keys.get(key)
        return entry.value if entry else None

    def create(self, key: str, value: Any, t: float, ttl: bool = False, owner: str | None = None) -> bool:
        self.expire(t)
        if key in self.keys:
            return False
        self._write(key, value, t, ttl, owner)
        return True

    def compare_and_swap(
        self, key: str, expect: Any, value: Any, t: float, ttl: bool = False, owner: str | None = None
    ) -> bool:
        self.expire(t)
        entry = self.keys.get(key)
        if entry is None or entry.value != expect:
            return False
        self._write(key, value, t, ttl, owner)
        return True

    def compare_and_delete(self, key: str, expect: Any, t: float) -> bool:
        self.expire(t)
        entry = self.keys.get(key)
        if entry is None or entry.value != expect:
            return False
        del self.keys[key]
        self.index += 1
        return True

    def put(self, key: str, value: Any, t: float, ttl: bool = False, owner: str | None = None) -> None:
        self.expire(t)
        self._write(key, value, t, ttl, owner)

    def delete(self, key: str, t: float) -> None:
        self.expire(t)
        if self.keys.pop(key, None) is not None:
            self.index += 1

    def view(self, t: float) -> ClusterView:
        """The whole cluster in one read, as the decision core's observation wants it (cached per index)."""
        self.expire(t)
        if self._view is not None and self._view[0] == self.index:
            return self._view[1]
        get = {k: e.value for k, e in self.keys.items()}
        leader = self.keys.get("leader")
        view = ClusterView(
            leader=LeaderKey(leader.value, leader.version) if leader else None,
            members=tuple(v for k, v in sorted(get.items()) if k.startswith("members/")),
            initialize=get.get("initialize"),
            failover=get.get("failover"),
            sync=get.get("sync"),
            leader_wal_position=get.get("status"),
            history=get.get("history", ()),
            failsafe=_failsafe_view(get.get("failsafe")),
        )
        self._view = (self.index, view)
        return view


def _failsafe_view(stored: Any) -> tuple[tuple[str, str], ...] | None:
    """The `failsafe` key as the observation wants it: (name, api_url) sorted by name; None when absent."""
    return None if stored is None else tuple(sorted(dict(stored).items()))
