"""What the health checks read: this node as the last turn saw it, and the health predicates over it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from fsm import State
from fsm.observation import ClusterConfig, ClusterView, PostgresState, Tags

from .http import HttpError

LAG_UNITS = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


@dataclass(frozen=True)
class NodeView:
    """This node as the last turn saw it, plus a live look at the postmaster; health checks are functions of it."""

    name: str
    scope: str
    state: State
    pg: PostgresState  # the last observation (a turn old at most)
    running: bool  # a live postmaster now: a crash shows at once, not a loop later
    view: ClusterView | None  # the DCS as the last successful read saw it
    config: ClusterConfig
    tags: Tags = field(default_factory=Tags)
    lease_left_s: float | None = None  # until this node's own lease deadline; None: it never renewed
    loop_age_s: float = 0.0  # since the last turn ended (since the API started, before the first)
    failsafe_active: bool = False  # Patroni's failsafe_mode_is_active (`Agent.failsafe_active`)

    @property
    def leader(self) -> str | None:
        return self.view.leader.holder if self.view and self.view.leader else None

    @property
    def holds_key(self) -> bool:
        return self.leader == self.name and self.lease_left_s is not None and self.lease_left_s > 0

    @property
    def primary(self) -> bool:
        return self.state is State.LEADER and self.running and self.pg.writable and self.holds_key

    @property
    def lag_bytes(self) -> int | None:
        """How far this node's WAL is behind the leader's published position (None: unknown)."""
        if self.view is None or self.view.leader_wal_position is None:
            return None
        return max(0, self.view.leader_wal_position - self.pg.wal_position)

    def replica(self, max_lag_bytes: int | None = None) -> bool:
        """A running standby with an upstream, or replaying the archive (`nostream`), within `max_lag_bytes`; a
        standby of nobody, after a demotion, serves stale reads."""
        source = self.pg.following is not None or self.tags.nostream
        streaming = self.running and self.pg.in_recovery and source
        lag = self.lag_bytes
        return streaming and (max_lag_bytes is None or lag is None or lag <= max_lag_bytes)

    def serves_reads(self, max_lag_bytes: int | None = None) -> bool:
        """A replica that takes read traffic: the `noloadbalance` tag keeps it out of the read pools."""
        return self.replica(max_lag_bytes) and not self.tags.noloadbalance

    @property
    def sync_name(self) -> str | None:
        return self.view.sync.sync_standby if self.view and self.view.sync else None

    @property
    def alive(self) -> bool:
        """The HA loop turned recently enough: within 2 x loop_wait + ttl."""
        return self.loop_age_s <= 2 * self.config.loop_wait_s + self.config.ttl_s


HealthCheck = Callable[[NodeView, int | None], bool]


def _primary(node: NodeView, lag: int | None) -> bool:
    return node.primary


HEALTH: dict[str, HealthCheck] = {
    "/": _primary,
    "/primary": _primary,
    "/master": _primary,
    "/read-write": _primary,
    "/leader": lambda node, lag: node.holds_key,
    "/replica": lambda node, lag: node.serves_reads(lag),
    "/read-only": lambda node, lag: node.primary or node.serves_reads(lag),
    "/sync": lambda node, lag: node.replica(lag) and node.sync_name == node.name,
    "/synchronous": lambda node, lag: node.replica(lag) and node.sync_name == node.name,
    "/async": lambda node, lag: node.serves_reads(lag) and node.sync_name != node.name,
    "/asynchronous": lambda node, lag: node.serves_reads(lag) and node.sync_name != node.name,
    "/health": lambda node, lag: node.running,
    "/liveness": lambda node, lag: node.alive,
    "/readiness": lambda node, lag: node.primary or node.replica(),
}


def parse_lag(text: str) -> int:
    """`?lag=` as bytes: `1048576`, `16MB`, `1 GB` (Postgres's units, powers of 1024)."""
    found = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?[bB]?)\s*", text)
    if found is None or found.group(2).lower() not in LAG_UNITS:
        raise HttpError(400, f"lag: {text!r} is not a size in bytes (as 1048576 or 16MB)")
    return int(found.group(1)) * LAG_UNITS[found.group(2).lower()]
