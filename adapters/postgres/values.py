"""The small values the Postgres adapter takes and returns: an upstream member, the cluster-wide settings, an
operation's result, a standby's replication state, and the slot name a member gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsm.observation import slot_name

__all__ = ["ClusterSettings", "ReplicaStatus", "Result", "Upstream", "done", "failed", "slot_name"]


@dataclass(frozen=True)
class Upstream:
    """A member to stream, clone or rewind from (the agent builds it from the member's conn_url)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class ClusterSettings:
    """The Postgres settings of every member: the DCS config key's postgresql.parameters, pg_hba and use_slots."""

    parameters: tuple[tuple[str, Any], ...] = ()
    pg_hba: tuple[str, ...] = ()
    use_slots: bool = True


@dataclass(frozen=True)
class Result:
    """What an operation did. `detail` carries Postgres's (or the tool's) own message on failure; truthy on success."""

    ok: bool
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


def done(detail: str = "") -> Result:
    return Result(True, detail)


def failed(detail: str) -> Result:
    return Result(False, detail)


@dataclass(frozen=True)
class ReplicaStatus:
    """One row of pg_stat_replication, for the REST API. `lag_bytes` is None while the standby has replayed nothing."""

    application_name: str
    state: str  # startup, catchup, streaming, backup, stopping
    sync_state: str  # async, potential, sync, quorum
    lag_bytes: int | None
