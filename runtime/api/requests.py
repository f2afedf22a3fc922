"""What the operations check before they act: request bodies, config patches, switchover checks, and the
restart and reinitialize requests the decision core answers (and their HTTP answers)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from adapters.dcs import Snapshot
from fsm.actions import CloneReplica, RefuseRequest
from fsm.facts import derive_facts
from fsm.observation import (
    AgentState,
    ClusterConfig,
    ClusterView,
    DataDir,
    FailoverRequest,
    Member,
    Observation,
    OperatorRequest,
    PostgresState,
    RequestKind,
)
from runtime.agent import Turn
from runtime.schedule import BadTime, NotATime, parse_time

from .http import HttpError, Reply

# --- request bodies ----------------------------------------------------------------------------------------------

MAX_DEPTH = 32  # no request nests deeper than a few levels; a deep one would recurse through every step after
TOO_DEEP = f"malformed JSON: nested deeper than {MAX_DEPTH} levels"


def json_object(body: bytes, allowed: set[str] | None = None, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else, or for keys outside `allowed`."""
    if not body.strip():
        if empty_ok:
            return {}
        raise HttpError(400, "expected a JSON object in the request body")
    try:
        value = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError included
        raise HttpError(400, f"malformed JSON: {error}") from None
    except RecursionError:
        raise HttpError(400, TOO_DEEP) from None
    if _depth(value) > MAX_DEPTH:
        raise HttpError(400, TOO_DEEP)
    if not isinstance(value, dict):
        raise HttpError(400, f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed) if allowed is not None else []
    if unknown:
        known = ", ".join(sorted(allowed or ())) or "none"
        raise HttpError(400, f"unknown keys: {', '.join(unknown)} (known: {known})")
    return value


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (without recursion: the point is to refuse deep ones)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def member_field(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"{key}: expected a member name, got {value!r}")
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- switchover checks -----------------------------------------------------------------------------------------


def promotion_blocker(view: ClusterView, config: ClusterConfig, member: Member, now_s: float) -> str | None:
    """Why `member` may not be promoted, judged by the decision core's own `eligible` fact from what the member
    published (state, WAL position, timeline, tags); None when it may."""
    if member.role != "replica":
        return f"it runs as {member.role}"
    running = member.running
    pg = PostgresState(
        DataDir.VALID, running=running, in_recovery=running, timeline=member.timeline, wal_received=member.wal_position
    )
    observation = Observation(member.name, now_s, config, view, pg, AgentState(tags=member.tags))
    facts = derive_facts(observation)
    if facts.truth["eligible"]:
        return None
    note = facts.notes["eligible"]
    return note.replace("Postgres not running", f"Postgres not running (state {member.state})")


def switchover_problem(
    view: ClusterView, config: ClusterConfig, leader: str | None, candidate: str | None, now_s: float
) -> str | None:
    """Why a switchover from `leader` (None: a failover) to `candidate` (None: the best member) cannot be honoured,
    naming each member's disqualifying fact; None when it can."""
    holder = view.leader.holder if view.leader else None
    if leader is not None and leader != holder:
        return f"leader name does not match: the leader key names {holder or 'nobody'}, not {leader}"
    if candidate is not None:
        if candidate == holder:
            return f"candidate {candidate} is already the leader"
        member = view.member(candidate)
        if member is None:
            names = ", ".join(m.name for m in view.members) or "none"
            return f"candidate {candidate} does not exist (members: {names})"
        why = promotion_blocker(view, config, member, now_s)
        return f"candidate {candidate} is not eligible: {why}" if why else None
    others = [m for m in view.members if m.name != holder]
    if not others:
        return "no member other than the leader could take over"
    blockers = {m.name: promotion_blocker(view, config, m, now_s) for m in others}
    if any(why is None for why in blockers.values()):
        return None
    return "no good candidate: " + "; ".join(f"{name}: {why}" for name, why in blockers.items())


def switch_verdict(view: ClusterView, old: str | None, candidate: str | None, action: str) -> Reply | None:
    """The answer to a switchover once the DCS shows its outcome; None while it is still under way."""
    holder = view.leader.holder if view.leader else None
    done = "switched" if action == "switchover" else "failed"
    if holder is not None and holder != old:
        if candidate in (None, holder):
            return Reply(200, {"message": f"Successfully {done} over to {holder}"})
        return Reply(200, {"message": f"{done.title()} over to {holder} instead of {candidate}"})
    if holder is not None and view.failover is None:  # the leader dropped the request without stepping down
        return Reply(503, {"message": f"{action} failed: {holder} is still the leader"})
    return None


def scheduled_time(value: Any, key: str, wall_now_s: float) -> datetime:
    """A request's `schedule` or `scheduled_at`: ISO 8601 text with a zone, not in the past. As Patroni answers:
    422 for a time in the past or text it cannot parse, 400 for a missing zone or a value that is not text."""
    try:
        when = parse_time(value, key)
    except NotATime as error:
        raise HttpError(422, str(error)) from None
    except BadTime as error:
        raise HttpError(400, str(error)) from None
    if when.timestamp() < wall_now_s:
        raise HttpError(422, f"{key}: {value} is in the past")
    return when


def scheduled_switchover_json(failover: FailoverRequest | None) -> dict[str, Any] | None:
    """Patroni's `scheduled_switchover` of /cluster: {"at", "from", "to"}; None when no switchover is scheduled."""
    if failover is None or failover.scheduled_at is None:
        return None
    try:
        at = parse_time(failover.scheduled_at, "scheduled_at").isoformat()
    except BadTime:
        at = failover.scheduled_at  # shown as stored: the leader clears a key it cannot read
    shown: dict[str, Any] = {"at": at}
    if failover.leader:
        shown["from"] = failover.leader
    if failover.candidate:
        shown["to"] = failover.candidate
    return shown


# --- restart and reinitialize: requests the decision core answers -----------------------------------------------

RESTART_KEYS = {"restart_pending", "role", "timeout", "schedule", "postgres_version"}
ROLES = {"primary": "primary", "master": "primary", "replica": "replica"}  # Patroni's names, old and new


def _seconds(value: Any) -> float:
    """Patroni's `timeout`: a number of seconds, or text such as "30", "30s", "500ms", "2min"."""
    if _number(value) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*", value) if isinstance(value, str) else None
    if match is None:
        raise HttpError(400, f'timeout: expected seconds (30, "30s", "2min"), got {value!r}')
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}[match.group(2)]


def restart_request(fields: dict[str, Any], at_s: float | None = None) -> OperatorRequest:
    """POST /restart's body (Patroni's keys, `schedule` already read into `at_s`, the time on the agent's monotonic
    clock) as the request a turn answers: the next one, or the first at or after `at_s`."""
    if "postgres_version" in fields:
        raise HttpError(501, "postgres_version is not supported: omit it to restart regardless of the version")
    role = fields.get("role")
    if role is not None and role not in ROLES:
        raise HttpError(400, f"role: expected primary or replica, got {role!r}")
    pending = fields.get("restart_pending", False)
    if not isinstance(pending, bool):
        raise HttpError(400, f"restart_pending: expected true or false, got {pending!r}")
    timeout = _seconds(fields["timeout"]) if fields.get("timeout") is not None else None
    return OperatorRequest(RequestKind.RESTART, ROLES.get(role or ""), pending, timeout, at_s)


def restart_shown(fields: dict[str, Any], when: datetime) -> dict[str, Any]:
    """Patroni's `scheduled_restart` (GET /patroni, the member key): the schedule as ISO text, and the options."""
    return {"schedule": when.isoformat(), **{key: value for key, value in fields.items() if key != "schedule"}}


def reinitialize_request(fields: dict[str, Any]) -> OperatorRequest:
    """POST /reinitialize's body. `force` and `from_leader` are Patroni's, and both must be booleans.

    from_leader: copy the leader even when a running replica is tagged `clonefrom` (without it, as Patroni, a
    member tagged `clonefrom` goes first). force: Patroni cancels a task its agent runs in the background (a
    restart, a clone) first; Regent's actions run inside a turn and are never cancelled half-way, so the request,
    with or without force, waits (bounded) for the turn in progress to end and is answered by the next one."""
    for key in ("force", "from_leader"):
        if not isinstance(fields.get(key, False), bool):
            raise HttpError(400, f"{key}: expected true or false, got {fields[key]!r}")
    return OperatorRequest(RequestKind.REINITIALIZE, from_leader=fields.get("from_leader", False))


def request_answer(request: OperatorRequest, turn: Turn | None, waited_s: float) -> Reply:
    """The HTTP answer to `request` from the turn that saw it: its decision acted on it, refused it, or did
    something more urgent (the rule and why say what)."""
    what = request.kind.value
    if turn is None:
        raise HttpError(503, f"{what}: no turn of the HA loop took the request within {waited_s:g} s")
    decision = turn.decision
    refused = next((a.reason for a in decision.actions if isinstance(a, RefuseRequest)), None)
    if refused is not None:
        raise HttpError(412 if request.kind is RequestKind.RESTART else 503, f"{what} refused: {refused}")
    acting = [a for a in decision.actions if type(a).__name__ in ANSWERING[request.kind]]
    if not acting:
        raise HttpError(503, f"{what} not done: [{decision.rule}] fired instead ({decision.why})")
    failed = [type(a).__name__ for a in acting if type(a).__name__ not in turn.succeeded]
    if failed:
        raise HttpError(503, f"{what} failed at {failed[0]}: {turn.failure or 'see the log'}")
    if request.kind is RequestKind.RESTART:
        return Reply(200, {"message": f"restarted successfully [{decision.rule}]"})
    source = next(a.source for a in acting if isinstance(a, CloneReplica))
    return Reply(200, {"message": f"reinitialized from {source}"})


# The actions that carry a request out: all of them must succeed for the request to have been done.
ANSWERING = {
    RequestKind.RESTART: {"RestartPrimary", "RestartStandby"},
    RequestKind.REINITIALIZE: {"Reclone", "StartStandby"},
}


def config_etag(snapshot: Snapshot) -> str:
    """The config key's version as an HTTP entity tag: GET /config's ETag, the If-Match of a write."""
    return f'"{snapshot.config_version if snapshot.config_version is not None else "none"}"'
