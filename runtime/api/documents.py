"""The documents the reads answer with: node and cluster status, history and decisions as JSON, metrics as
Prometheus text."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from adapters.dcs.layout import REGENT_VERSION
from fsm import State
from fsm.facts import derive_facts
from fsm.observation import ClusterView, DataDir, Member, Observation, Tags
from runtime.agent import Agent, Turn

from .node import NodeView

# --- JSON documents -------------------------------------------------------------------------------------------------


def tags_json(tags: Tags) -> dict[str, Any]:
    shown: dict[str, Any] = {"nofailover": tags.nofailover, "nosync": tags.nosync}
    shown["failover_priority"] = tags.failover_priority
    shown.update({name: True for name in ("noloadbalance", "clonefrom", "nostream") if getattr(tags, name)})
    if tags.replicatefrom:
        shown["replicatefrom"] = tags.replicatefrom
    return shown


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _role(node: NodeView) -> str:
    if node.pg.data_dir is not DataDir.VALID:
        return "uninitialized"
    if node.pg.running:
        return "replica" if node.pg.in_recovery else "primary"
    return "primary" if node.state is State.LEADER else "replica"


def node_status(node: NodeView) -> dict[str, Any]:
    """This node's status in Patroni's field names, plus Regent's `ha_state`."""
    pg = node.pg
    if pg.running and pg.in_recovery:
        xlog: dict[str, Any] = {"received_location": pg.wal_received, "replayed_location": pg.wal_replayed}
    else:
        xlog = {"location": pg.wal_position}
    status: dict[str, Any] = {
        "state": "running" if node.running else "stopped",
        "role": _role(node),
        "timeline": pg.timeline,
        "xlog": xlog,
        "database_system_identifier": pg.system_identifier,
        "cluster_unlocked": node.view is not None and node.leader is None,
        "patroni": {"version": REGENT_VERSION, "scope": node.scope, "name": node.name},
        "tags": tags_json(node.tags),
        "ha_state": node.state.value,
        "leader": node.leader,
    }
    if node.config.pause:
        status["pause"] = True
    if node.failsafe_active:
        status["failsafe_mode_is_active"] = True
    if node.sync_name == node.name:
        status["sync_standby"] = True
    return status


def shown_state(member: Member, leader: str | None) -> str:
    """A member's state as Patroni shows it: a standby's replication state (streaming, ...), else its own."""
    return (member.replication_state if member.name != leader else None) or member.state


def cluster_json(view: ClusterView, scope: str, pause: bool) -> dict[str, Any]:
    """Every member as Patroni's /cluster lists it: the leader, the sync standby, the replicas with their lag."""
    leader = view.leader.holder if view.leader else None
    sync = view.sync.sync_standby if view.sync else None
    members = []
    for member in view.members:
        url = urlsplit(member.conn_url)
        role = "leader" if member.name == leader else "sync_standby" if member.name == sync else "replica"
        entry: dict[str, Any] = {
            "name": member.name,
            "role": role,
            "state": shown_state(member, leader),
            "api_url": member.api_url,
            "host": url.hostname,
            "port": url.port or 5432,
            "timeline": member.timeline,
            "tags": tags_json(member.tags),
        }
        if role != "leader":
            known = view.leader_wal_position is not None
            entry["lag"] = max(0, (view.leader_wal_position or 0) - member.wal_position) if known else "unknown"
        members.append(entry)
    result: dict[str, Any] = {"scope": scope, "members": members}
    if pause:
        result["pause"] = True
    return result


def history_json(view: ClusterView) -> list[list[Any]]:
    """Patroni's [timeline, lsn, reason, timestamp, new_leader], as the DCS history key holds them."""
    return [
        [switch.timeline, switch.switch_lsn, switch.reason, switch.at, switch.new_leader] for switch in view.history
    ]


def _action_json(action: object) -> dict[str, Any]:
    fields = dataclasses.asdict(action) if dataclasses.is_dataclass(action) else {}  # type: ignore[arg-type]
    return {"type": type(action).__name__, **fields}


def turn_json(turn: Turn) -> dict[str, Any]:
    decision = turn.decision
    return {
        "at": _iso(turn.at),
        "before": turn.before.value,
        "after": decision.state.value,
        "rule": decision.rule,
        "why": decision.why,
        "actions": [_action_json(action) for action in decision.actions],
        "succeeded": sorted(turn.succeeded),
        "failed": sorted(turn.failed),
    }


def decision_json(agent: Agent) -> dict[str, Any]:
    """The current state, the last rule and why, and the last turns, newest first."""
    turns = list(agent.turns)  # a copy: the loop appends while we read
    last = turns[-1] if turns else None
    return {
        "name": agent.name,
        "state": agent.state.value,
        "rule": last.decision.rule if last else None,
        "why": last.decision.why if last else None,
        "at": _iso(last.at) if last else None,
        "decisions": [turn_json(turn) for turn in reversed(turns)],
        "facts": _facts(agent.last_observation),
    }


def _facts(observation: Observation | None) -> dict[str, str]:
    """Every fact of the last observation with its value and note (`eligible=no (lag ... > ...)`): why a rule
    fired, and why another did not ("why did no failover happen")."""
    if observation is None:
        return {}
    facts = derive_facts(observation)
    return {name: facts.explain(name).split("=", 1)[1] for name in facts.truth}


# --- metrics ----------------------------------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(node: NodeView, decisions: Mapping[str, int]) -> str:
    """Prometheus text exposition (format 0.0.4); every sample carries the scope and the member name."""
    base = f'scope="{_label(node.scope)}",name="{_label(node.name)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{{{base}{extra}}} {value:g}" for extra, value in samples)

    def gauge(name: str, help_text: str, value: float) -> None:
        metric(name, "gauge", help_text, [("", value)])

    pg, lease_left = node.pg, node.lease_left_s
    metric("regent_info", "gauge", "Regent's version.", [(f',version="{REGENT_VERSION}"', 1)])
    gauge("regent_postgres_running", "1 if a postmaster runs on the data directory.", node.running)
    gauge("regent_primary", "1 if this node is the running, writable leader holding the key.", node.primary)
    gauge("regent_replica", "1 if this node is a running standby with an upstream.", node.replica())
    gauge("regent_leader", "1 if this node holds the leader key with a valid lease.", node.holds_key)
    gauge("regent_sync_standby", "1 if the sync key names this node.", node.sync_name == node.name)
    gauge("regent_cluster_unlocked", "1 if the DCS holds no leader key.", node.view is not None and not node.leader)
    gauge("regent_pause", "1 if the cluster is in maintenance mode.", node.config.pause)
    gauge("regent_xlog_location", "The furthest WAL position this node has, in bytes.", pg.wal_position)
    gauge("regent_xlog_received_location", "WAL received by a standby, in bytes.", pg.wal_received)
    gauge("regent_xlog_replayed_location", "WAL replayed by a standby, in bytes.", pg.wal_replayed)
    gauge("regent_timeline", "Postgres's timeline.", pg.timeline)
    gauge("regent_lease_seconds_left", "Seconds to this node's lease deadline (0: none).", max(0.0, lease_left or 0))
    gauge("regent_loop_seconds_since_turn", "Seconds since the HA loop's last turn.", node.loop_age_s)
    states = [(f',state="{state.value}"', float(state is node.state)) for state in State]
    metric("regent_ha_state", "gauge", "1 for the HA state this node is in.", states)
    counts = [(f',rule="{_label(rule)}"', count) for rule, count in sorted(decisions.items())]
    metric("regent_decisions_total", "counter", "Turns of the HA loop by the rule that fired.", counts)
    for name, kind, help_text, value in patroni_metrics(node):
        metric(name, kind, help_text, [("", value)])
    return "\n".join(lines) + "\n"


def patroni_metrics(node: NodeView) -> list[tuple[str, str, str, float]]:
    """The samples of Patroni's /metrics that Regent knows, by Patroni's names and meanings, so that dashboards and
    alerts written for Patroni read a Regent node (the ones it cannot fill are left out, not faked)."""
    pg = node.pg
    standby = node.running and pg.in_recovery
    version = "".join(part.zfill(2) for part in REGENT_VERSION.split("."))  # 0.1.0 => 000100, as Patroni pads
    return [
        ("patroni_version", "gauge", "Regent's semver without periods (Patroni's metric).", int(version)),
        ("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.", node.running),
        ("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.", node.primary),
        ("patroni_xlog_location", "counter", "Current location of the Postgres transaction log, 0 if this node is"
         " not the leader.", pg.wal_position if node.primary else 0),
        ("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise (Regent"
         " runs no standby cluster).", 0),
        ("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.", standby),
        ("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise.",
         node.sync_name == node.name),
        ("patroni_xlog_received_location", "counter", "Current location of the received Postgres transaction log,"
         " 0 if this node is not a replica.", pg.wal_received if standby else 0),
        ("patroni_xlog_replayed_location", "counter", "Current location of the replayed Postgres transaction log,"
         " 0 if this node is not a replica.", pg.wal_replayed if standby else 0),
        ("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise.",
         standby and pg.replication_state == "streaming"),
        ("patroni_postgres_in_archive_recovery", "gauge", "Value is 1 if Postgres is replicating from archive, 0"
         " otherwise.", standby and pg.replication_state == "in archive recovery"),
        ("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked.",
         node.view is not None and not node.leader),
        ("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 otherwise.",
         node.failsafe_active),
        ("patroni_failsafe_mode_enabled", "gauge", "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
         node.config.failsafe_mode),
        ("patroni_failsafe_member", "gauge", "Value is 1 if this node is a member of failsafe, 0 otherwise.",
         node.view is not None and node.name in dict(node.view.failsafe or ())),
        ("patroni_postgres_timeline", "counter", "Postgres timeline of this node (if running), 0 otherwise.",
         pg.timeline if node.running else 0),
        ("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise.",
         pg.pending_restart),
        ("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise.", node.config.pause),
    ]  # fmt: skip
