"""What regentctl shows, read from the DCS alone (so it works while agents are down): the members as patronictl
lists them, the cascade as a tree, the timeline history, and the tables in each output format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from fsm.observation import ClusterView, Member
from fsm.topology import upstream_of
from runtime.api.documents import shown_state, tags_json

FORMATS = ("pretty", "json", "yaml", "tsv")
DEFAULT_PRIORITY = ("failover_priority", 1)
MB = 1024 * 1024


def member_rows(view: ClusterView) -> list[dict[str, Any]]:
    """One row per member, as `patronictl list` shows it: the leader first, then by name."""
    leader = view.leader.holder if view.leader else None
    sync = view.sync.sync_standby if view.sync else None

    def row(member: Member) -> dict[str, Any]:
        role = "Leader" if member.name == leader else "Sync Standby" if member.name == sync else "Replica"
        known = view.leader_wal_position is not None and role != "Leader"
        lag = (view.leader_wal_position or 0) - member.wal_position if known else None
        shown: dict[str, Any] = {
            "Member": member.name,
            "Host": _host(member.conn_url),
            "Role": role,
            "State": shown_state(member, leader),
            "TL": member.timeline,
            "Lag in MB": None if lag is None else max(0, lag) // MB,
        }
        if member.pending_restart:
            shown["Pending restart"] = "*"
        # the tags as /cluster shows them, less the ones at their defaults
        tags = {
            key: value for key, value in tags_json(member.tags).items() if value and (key, value) != DEFAULT_PRIORITY
        }
        if tags:
            shown["Tags"] = tags
        return shown

    ordered = sorted(view.members, key=lambda m: (m.name != leader, m.name))
    return [row(member) for member in ordered]


def topology_rows(view: ClusterView) -> list[dict[str, Any]]:
    """`list`'s rows as a tree: each standby under the member it streams from (`+ ` per level, as patronictl)."""
    leader = view.leader.holder if view.leader else None
    rows = {row["Member"]: row for row in member_rows(view)}
    below: dict[str | None, list[str]] = {}
    for member in view.members:
        upstream = None if member.name == leader else upstream_of(member.name, member.tags, view, leader)
        below.setdefault(upstream if upstream in rows else None, []).append(member.name)
    ordered: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int) -> None:
        for name in sorted(below.get(parent, ()), key=lambda n: (n != leader, n)):
            ordered.append({**rows[name], "Member": "+ " * depth + name})
            walk(name, depth + 1)

    walk(None, 0)
    return ordered


def history_rows(view: ClusterView) -> list[dict[str, Any]]:
    return [
        {"TL": s.timeline, "LSN": s.switch_lsn, "Reason": s.reason, "Timestamp": s.at, "New Leader": s.new_leader}
        for s in view.history
    ]


def render(rows: Sequence[dict[str, Any]], form: str, title: str = "") -> str:
    """`rows` in `form` (one of FORMATS); `pretty` is patronictl's boxed table under `title`."""
    if form == "json":
        return json.dumps(list(rows), default=str)
    if form == "yaml":
        return yaml.safe_dump(list(rows), sort_keys=False, default_flow_style=False).rstrip()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    if form == "tsv":
        return "\n".join("\t".join(line) for line in [columns, *cells])
    widths = [max(len(text) for text in [column, *(line[i] for line in cells)]) for i, column in enumerate(columns)]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"
    top = rule if not title else _titled(rule, title)

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        parts = [v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    numeric = [all(isinstance(row.get(column), int) or row.get(column) is None for row in rows) for column in columns]
    body = [line(values, numeric) for values in cells]
    return "\n".join([top, line(columns, [False] * len(columns)), rule, *body, rule])


def _titled(rule: str, title: str) -> str:
    label = f"+ {title} "
    return label + rule[len(label) :] if len(label) < len(rule) else label + "+"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}: {item}" for key, item in value.items())
    return str(value)


def host_port(conn_url: str) -> tuple[str, int] | None:
    """The Postgres address in a member's conn_url (postgres://user@host:port/db)."""
    url = urlsplit(conn_url)
    return (url.hostname, url.port or 5432) if url.hostname else None


def _host(conn_url: str) -> str:
    address = host_port(conn_url)
    return f"{address[0]}:{address[1]}" if address else ""
