"""Observations of a three-node cluster (n0, n1, n2) for rule tests, built from a healthy baseline.

`leader_view()` is n0's healthy cluster as n0 sees it; `follower_view()` is the same cluster as n1 sees it.
Tests change one thing with `evolve` (dataclasses.replace) and the helpers below, so each case reads as the
fact it is about.
"""

from __future__ import annotations

from dataclasses import replace as evolve

from fsm.observation import (
    ActionOutcome,
    AgentState,
    ClusterConfig,
    ClusterView,
    DataDir,
    LeaderKey,
    Member,
    Observation,
    PostgresState,
    Tags,
    TimelineSwitch,
)

__all__ = ["evolve"]

SYSID = "7301234567890123456"
NOW = 1000.0
CONFIG = ClusterConfig()  # ttl 30, loop_wait 10, retry_timeout 10, safety_margin 2, max lag 1 MiB


def members(leader: str | None = "n0", wal: int = 5_000_000, timeline: int = 1) -> tuple[Member, ...]:
    return tuple(
        Member(name, role="primary" if name == leader else "replica", wal_position=wal, timeline=timeline)
        for name in ("n0", "n1", "n2")
    )


def cluster(leader: str | None = "n0", **changes: object) -> ClusterView:
    view = ClusterView(
        leader=LeaderKey(leader, version=7) if leader else None,
        members=members(leader),
        initialize=SYSID,
        leader_wal_position=5_000_000,
    )
    return evolve(view, **changes)


def standby(following: str | None = "n0", wal: int = 5_000_000, **changes: object) -> PostgresState:
    pg = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=SYSID,
        running=True,
        in_recovery=True,
        wal_received=wal,
        wal_replayed=wal,
        following=following,
    )
    return evolve(pg, **changes)


def primary(wal: int = 5_000_000, **changes: object) -> PostgresState:
    pg = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=SYSID,
        running=True,
        wal_written=wal,
        streaming_replicas=frozenset({"n1", "n2"}),
    )
    return evolve(pg, **changes)


def stopped(**changes: object) -> PostgresState:
    return evolve(PostgresState(data_dir=DataDir.VALID, system_identifier=SYSID, wal_written=5_000_000), **changes)


def outcome(succeeded: str = "", failed: str = "") -> ActionOutcome:
    return ActionOutcome(frozenset(succeeded.split()), frozenset(failed.split()))


def agent(renewed_ago_s: float | None = None, **changes: object) -> AgentState:
    renewed = None if renewed_ago_s is None else NOW - renewed_ago_s
    return evolve(AgentState(lease_renewed_at_s=renewed), **changes)


def observe(
    name: str = "n1",
    dcs: ClusterView | str | None = "default",
    pg: PostgresState | None = None,
    config: ClusterConfig = CONFIG,
    **changes: object,
) -> Observation:
    """An observation by `name`; by default n1 streaming from leader n0 in a healthy cluster."""
    view = cluster() if dcs == "default" else dcs
    base = Observation(
        name=name,
        now_s=NOW,
        config=config,
        dcs=view,  # type: ignore[arg-type]
        postgres=pg if pg is not None else standby(),
    )
    return evolve(base, **changes)


def leader_view(**changes: object) -> Observation:
    """n0 leading a healthy cluster, its lease renewed one loop ago."""
    base = observe("n0", cluster(), primary(), agent=agent(renewed_ago_s=10))
    return evolve(base, **changes)


def fresh_node(**changes: object) -> Observation:
    """n1 with an empty data directory in a DCS where nobody raced for initialize yet."""
    return evolve(observe("n1", ClusterView(), PostgresState()), **changes)


def forked_history(end_of_tl1: int) -> tuple[TimelineSwitch, ...]:
    return (TimelineSwitch(timeline=1, switch_lsn=end_of_tl1, reason="failover"),)


def with_tags(o: Observation, **tags: object) -> Observation:
    return evolve(o, agent=evolve(o.agent, tags=Tags(**tags)))  # type: ignore[arg-type]
