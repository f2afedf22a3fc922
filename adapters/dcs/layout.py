"""Patroni's DCS layout and JSON values, both ways: raw keys <-> the decision core's ClusterView.

Every key lives under `/<namespace>/<scope>/` (namespace defaults to `service`):

    leader            the holder's member name (TTL key on etcd, ephemeral node on ZooKeeper)
    members/<name>    {"conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version",
                       "scheduled_restart" while one waits}
    initialize        the system identifier ("" while the winner of the race runs initdb)
    config            the cluster-wide settings as JSON
    status            {"optime": <leader WAL position>} (older Patroni: optime/leader, a bare number)
    history           [[timeline, switch_lsn, reason, timestamp, new_leader], ...]
    failover          {"leader": ..., "member": ..., "scheduled_at": ...}
    sync              {"leader": ..., "sync_standby": ...}
    failsafe          {"<member name>": "<its api_url>", ...}: whom a leader in failsafe mode must reach

Values written by other tools may be malformed: decoding never raises, a bad value is read as absent and named in
`Snapshot.problems` so the agent can log it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fsm.observation import (
    ClusterView,
    FailoverRequest,
    FailsafeView,
    LeaderKey,
    Member,
    SyncState,
    Tags,
    TimelineSwitch,
)

LEADER = "leader"
MEMBERS = "members/"
INITIALIZE = "initialize"
CONFIG = "config"
STATUS = "status"
LEGACY_OPTIME = "optime/leader"
HISTORY = "history"
FAILOVER = "failover"
SYNC = "sync"
FAILSAFE = "failsafe"

REGENT_VERSION = "0.1.0"


@dataclass(frozen=True)
class Node:
    """One stored key as a backend read it: its text and the version a compare-and-swap must match."""

    value: str
    version: int


@dataclass(frozen=True)
class Snapshot:
    """The whole cluster as one read saw it: the core's view, the raw `config` for compare-and-set, and any value
    that could not be decoded."""

    view: ClusterView
    config: dict[str, Any] | None = None
    config_version: int | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemberRecord:
    """What this node publishes under `members/<name>`."""

    name: str
    conn_url: str
    api_url: str
    state: str = "running"
    role: str = "replica"
    wal_position: int = 0
    timeline: int = 1
    tags: Tags = field(default_factory=Tags)
    scheduled_restart: dict[str, Any] | None = None  # {"schedule": ISO text, ...options}: patronictl list, flush
    pending_restart: bool = False  # settings wait for a restart (patronictl list shows it)
    # a standby's positions and replication state (patronictl list shows them: "streaming", "in archive recovery")
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    replication_state: str | None = None
    pause: bool = False  # this member runs paused (`patronictl pause --wait` waits until every member says so)

    def to_json(self) -> str:
        tags: dict[str, Any] = {"failover_priority": self.tags.failover_priority}
        if self.tags.nofailover:
            tags["nofailover"] = True
        if self.tags.nosync:
            tags["nosync"] = True
        if self.tags.noloadbalance:
            tags["noloadbalance"] = True
        if self.tags.clonefrom:
            tags["clonefrom"] = True
        if self.tags.nostream:
            tags["nostream"] = True
        if self.tags.replicatefrom:
            tags["replicatefrom"] = self.tags.replicatefrom
        value = {
            "conn_url": self.conn_url,
            "api_url": self.api_url,
            "state": self.state,
            "role": self.role,
            "xlog_location": self.wal_position,
            "timeline": self.timeline,
            "tags": tags,
            "version": REGENT_VERSION,
        }
        if self.scheduled_restart is not None:
            value["scheduled_restart"] = self.scheduled_restart
        if self.pending_restart:
            value["pending_restart"] = True
        standby = {"receive_lsn": self.receive_lsn, "replay_lsn": self.replay_lsn}
        value.update({key: lsn for key, lsn in standby.items() if lsn is not None})
        if self.replication_state:
            value["replication_state"] = self.replication_state
        if self.pause:
            value["pause"] = True
        return _dump(value)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def encode_failover(request: FailoverRequest) -> str:
    value = {"leader": request.leader, "member": request.candidate, "scheduled_at": request.scheduled_at}
    return _dump({key: item for key, item in value.items() if item is not None})


def encode_sync(sync: SyncState) -> str:
    return _dump({"leader": sync.leader, "sync_standby": sync.sync_standby})


def encode_history(history: tuple[TimelineSwitch, ...], now: str) -> str:
    """Patroni's lines; a line naming its new leader but no time yet is stamped `now` (ISO 8601)."""
    return _dump([[s.timeline, s.switch_lsn, s.reason, s.at or (now if s.new_leader else None), s.new_leader]
                  for s in history])  # fmt: skip


def encode_status(wal_position: int) -> str:
    return _dump({"optime": wal_position})


def encode_config(config: dict[str, Any]) -> str:
    return _dump(config)


def encode_failsafe(members: FailsafeView) -> str:
    """Patroni's `{name: api_url}` of every member the leader must reach in failsafe mode."""
    return _dump(dict(members))


def _history_line(line: list[Any]) -> TimelineSwitch:
    """[timeline, lsn, reason] and, from Patroni 1.6 on, the time and the new leader (either may be null)."""
    at, leader = [*line[3:5], None, None][:2]
    return TimelineSwitch(
        int(line[0]), int(line[1]), str(line[2] or ""), str(leader) if leader else None, str(at) if at else None
    )


class _Decoder:
    """Decodes one read's keys; collects a problem instead of raising on a value it cannot use."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.problems: list[str] = []

    def json(self, key: str, kinds: type | tuple[type, ...]) -> Any:
        node = self.nodes.get(key)
        if node is None or node.value == "":
            return None
        try:
            value = json.loads(node.value)
        except ValueError:
            value = None
        if not isinstance(value, kinds):
            self.problems.append(f"{key}: not the JSON Patroni writes, ignored: {node.value[:80]!r}")
            return None
        return value

    def member(self, key: str) -> Member | None:
        data = self.json(key, dict)
        name = key[len(MEMBERS) :]
        if "/" in name:  # Patroni reads only direct children of members/
            self.problems.append(f"{key}: not a direct child of {MEMBERS}, ignored")
            return None
        if data is None or not name:
            return None
        try:
            raw_tags = data.get("tags") or {}
            tags = Tags(
                nofailover=bool(raw_tags.get("nofailover", False)),
                nosync=bool(raw_tags.get("nosync", False)),
                failover_priority=int(raw_tags.get("failover_priority", 1)),
                noloadbalance=bool(raw_tags.get("noloadbalance", False)),
                clonefrom=bool(raw_tags.get("clonefrom", False)),
                nostream=bool(raw_tags.get("nostream", False)),
                replicatefrom=str(raw_tags["replicatefrom"]) if raw_tags.get("replicatefrom") else None,
            )
            role = str(data.get("role", "replica"))
            return Member(
                name,
                role="primary" if role in ("master", "primary", "standby_leader") else "replica",
                state=str(data.get("state", "running")),
                wal_position=int(data.get("xlog_location") or 0),
                timeline=int(data.get("timeline") or 1),
                tags=tags,
                api_url=str(data.get("api_url", "")),
                conn_url=str(data.get("conn_url", "")),
                replication_state=str(data["replication_state"]) if data.get("replication_state") else None,
                pending_restart=data.get("pending_restart") is True,
            )
        except (TypeError, ValueError, AttributeError) as error:
            self.problems.append(f"{key}: {error}, ignored")
            return None

    def leader(self) -> LeaderKey | None:
        node = self.nodes.get(LEADER)
        return LeaderKey(node.value, node.version) if node and node.value else None

    def leader_wal_position(self) -> int | None:
        status = self.json(STATUS, dict)
        optime = status.get("optime") if status else None
        if optime is None and LEGACY_OPTIME in self.nodes:
            optime = self.nodes[LEGACY_OPTIME].value
        try:
            return int(optime) if optime is not None else None
        except (TypeError, ValueError):
            self.problems.append(f"{STATUS}: optime {optime!r} is not a WAL position, ignored")
            return None

    def history(self) -> tuple[TimelineSwitch, ...]:
        lines = self.json(HISTORY, list) or []
        try:
            return tuple(_history_line(line) for line in lines)
        except (TypeError, ValueError, IndexError):
            self.problems.append(f"{HISTORY}: lines are not [timeline, lsn, reason, ...], ignored")
            return ()

    def failover(self) -> FailoverRequest | None:
        data = self.json(FAILOVER, dict)
        if not data or (data.get("leader") is None and data.get("member") is None):
            return None
        # `scheduled_at` as stored: the agent converts it to its own clock (runtime.schedule), the core never parses
        scheduled_at = data.get("scheduled_at")
        shown = None if scheduled_at in (None, "") else str(scheduled_at)
        return FailoverRequest(leader=data.get("leader"), candidate=data.get("member"), scheduled_at=shown)

    def sync(self) -> SyncState | None:
        data = self.json(SYNC, dict)
        return SyncState(data.get("leader"), data.get("sync_standby")) if data is not None else None

    def failsafe(self) -> FailsafeView | None:
        """(name, api_url) pairs sorted by name; None when absent or not a JSON object of member names to URLs."""
        data = self.json(FAILSAFE, dict)
        if data is None:
            return None
        if not all(name and isinstance(url, str) for name, url in data.items()):
            self.problems.append(f"{FAILSAFE}: not a mapping of member names to REST API URLs, ignored: {data!r:.80}")
            return None
        return tuple(sorted(data.items()))


def decode(nodes: dict[str, Node]) -> Snapshot:
    """Build the snapshot from every key under the scope, named relative to it (`leader`, `members/n0`, ...)."""
    decoder = _Decoder(nodes)
    members = (decoder.member(key) for key in sorted(nodes) if key.startswith(MEMBERS))
    initialize = nodes[INITIALIZE].value if INITIALIZE in nodes else None
    view = ClusterView(
        leader=decoder.leader(),
        members=tuple(member for member in members if member is not None),
        initialize=initialize,
        failover=decoder.failover(),
        sync=decoder.sync(),
        leader_wal_position=decoder.leader_wal_position(),
        history=decoder.history(),
        failsafe=decoder.failsafe(),
    )
    config = decoder.json(CONFIG, dict)
    config_version = nodes[CONFIG].version if CONFIG in nodes else None
    return Snapshot(view, config, config_version, tuple(decoder.problems))


def scope_path(namespace: str, scope: str) -> str:
    """`/service/batman` for namespace `service` (or `/service/`) and scope `batman`."""
    return "/" + "/".join(part.strip("/") for part in (namespace, scope) if part.strip("/"))
