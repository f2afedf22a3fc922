"""Who streams from whom, and whom a clone copies: the replication topology Patroni's tags shape (`replicatefrom`,
`nostream`, `clonefrom`), as pure functions of the DCS view."""

from __future__ import annotations

from fsm.observation import ClusterView, Member, Observation, OperatorRequest, Tags


def upstream_of(name: str, tags: Tags, view: ClusterView | None, leader: str | None) -> str | None:
    """Whom member `name` streams from: nobody with `nostream`; the running replica its `replicatefrom` tag names
    (Patroni's cascading replication); else the leader. A cycle of replicatefrom tags would leave its members
    without the leader's WAL, so they stream from the leader."""
    if tags.nostream:
        return None
    if view is None or not tags.replicatefrom:
        return leader
    target = view.member(tags.replicatefrom)
    if target is None or target.name in (name, leader) or not target.running or target.role != "replica":
        return leader
    return leader if _tags_lead_back(name, target, view) else target.name


def _tags_lead_back(name: str, start: Member, view: ClusterView) -> bool:
    """Whether following replicatefrom tags from `start` comes back to member `name`."""
    seen: set[str] = set()
    hop: Member | None = start
    while hop is not None and hop.tags.replicatefrom and hop.name not in seen:
        if hop.tags.replicatefrom == name:
            return True
        seen.add(hop.name)
        hop = view.member(hop.tags.replicatefrom)
    return False


def slot_holders(name: str, view: ClusterView | None, leader: str | None) -> tuple[str, ...]:
    """The members that stream from member `name`, so that it keeps a replication slot for each (sorted)."""
    members = view.members if view is not None else ()
    return tuple(
        sorted(m.name for m in members if m.name != name and upstream_of(m.name, m.tags, view, leader) == name)
    )


def clone_source_of(obs: Observation, leader: str | None, request: OperatorRequest | None) -> str | None:
    """Patroni's `clonefrom` tag: a new replica copies a running replica that carries it (the first by name), and
    so takes the load of a base backup off the leader; the leader when none does, or when a reinitialize request
    asks for it (`from_leader`)."""
    if request is not None and request.from_leader:
        return leader
    view = obs.dcs
    tagged = sorted(
        m.name
        for m in (view.members if view else ())
        if m.tags.clonefrom and m.running and m.role == "replica" and m.name not in (obs.name, leader)
    )
    return tagged[0] if tagged else leader
