"""regentctl's commands that act: each goes through a member's REST API (the leader's for cluster-wide requests),
which hands it to the HA loop; the answer is the agent's, one line. They ask for confirmation unless --force."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from adapters.dcs import Snapshot

from .context import ctl_settings, read
from .rest import CtlError, call, message
from .views import host_port

WAIT_S = 60.0


def _api(snapshot: Snapshot, name: str | None) -> tuple[str, str]:
    """(member, api_url): the named member, else the leader."""
    view = snapshot.view
    name = name or (view.leader.holder if view.leader else None)
    if name is None:
        raise CtlError("the cluster has no leader: name a member")
    member = view.member(name)
    if member is None:
        known = ", ".join(sorted(m.name for m in view.members)) or "none"
        raise CtlError(f"no member {name!r} in the cluster (members: {known})")
    return member.name, member.api_url


def _ask(args: argparse.Namespace, question: str) -> None:
    if args.force:
        return
    if not sys.stdin.isatty():
        raise CtlError(f"{question} Add --force to go ahead without a terminal to confirm on", 2)
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise CtlError("aborted")


def _request(args: argparse.Namespace, member: str | None, method: str, path: str, body: Any = None) -> str:
    snapshot = read(args)
    name, url = _api(snapshot, member)
    status, answer = call(name, url, method, path, ctl_settings(args), body)
    if status >= 400:
        raise CtlError(f"{name}: {message(answer)} (HTTP {status})")
    return f"{name}: {message(answer)}" if answer is not None else f"{name}: done (HTTP {status})"


def switchover(args: argparse.Namespace) -> str:
    view = read(args).view
    leader = args.leader or (view.leader.holder if view.leader else None)
    body = {"leader": leader, "candidate": args.candidate, "scheduled_at": args.scheduled}
    target = f" to {args.candidate}" if args.candidate else ""
    _ask(args, f"Switch over from {leader}{target}{' at ' + args.scheduled if args.scheduled else ''}?")
    return _request(args, leader, "POST", "/switchover", {key: value for key, value in body.items() if value})


def failover(args: argparse.Namespace) -> str:
    _ask(args, f"Fail over to {args.candidate}?")
    return _request(args, None, "POST", "/failover", {"candidate": args.candidate})


def restart(args: argparse.Namespace) -> str:
    body = {"role": args.role, "restart_pending": args.pending or None, "schedule": args.scheduled}
    body = {key: value for key, value in body.items() if value}
    _ask(args, f"Restart {', '.join(args.members)}{' at ' + args.scheduled if args.scheduled else ''}?")
    return "\n".join(_request(args, member, "POST", "/restart", body) for member in args.members)


def reinit(args: argparse.Namespace) -> str:
    _ask(args, f"Reinitialize {args.member} (its data directory is moved aside and copied afresh)?")
    body = {"force": bool(args.force), "from_leader": bool(args.from_leader)}
    return _request(args, args.member, "POST", "/reinitialize", body)  # answered once done: --wait holds anyway


def reload(args: argparse.Namespace) -> str:
    return "\n".join(_request(args, member, "POST", "/reload") for member in args.members)


def flush(args: argparse.Namespace) -> str:
    if args.target == "switchover":
        return _request(args, None, "DELETE", "/switchover")
    return "\n".join(_request(args, member, "DELETE", "/restart") for member in args.members)


def _pause(paused: bool) -> Callable[[argparse.Namespace], str]:
    def run(args: argparse.Namespace) -> str:
        answer = _request(args, None, "PATCH", "/config", {"pause": True if paused else None})
        if args.wait:
            _wait_for_pause(args, paused)
            answer += f"\nevery member {'paused' if paused else 'resumed'}"
        return answer

    return run


def _wait_for_pause(args: argparse.Namespace, paused: bool) -> None:
    """Until every member's own /patroni says it is (not) paused, as `patronictl pause --wait` waits."""
    deadline = time.monotonic() + WAIT_S
    settings = ctl_settings(args)
    while True:
        snapshot = read(args)
        states = {
            m.name: bool((call(m.name, m.api_url, "GET", "/patroni", settings)[1] or {}).get("pause"))
            for m in snapshot.view.members
        }
        behind = sorted(name for name, state in states.items() if state != paused)
        if not behind:
            return
        if time.monotonic() > deadline:
            raise CtlError(f"not every member {'paused' if paused else 'resumed'} within {WAIT_S:g} s: {behind}")
        time.sleep(0.5)


def edit_config(args: argparse.Namespace) -> str:
    """--set key=value (dotted keys, YAML values) and -p name=value (postgresql.parameters), as one PATCH."""
    patch: dict[str, Any] = {}
    for text in args.set or ():
        key, _, value = text.partition("=")
        _put(patch, key.split("."), yaml.safe_load(value) if value else None)
    for text in args.pg or ():
        name, _, value = text.partition("=")
        _put(patch, ["postgresql", "parameters", name], yaml.safe_load(value) if value else None)
    if not patch:
        raise CtlError("edit-config: give --set key=value or -p name=value (an editor session is not offered)", 2)
    before = read(args).config or {}
    shown = "\n".join(
        difflib.unified_diff(_yaml(before), _yaml(_merged(before, patch)), "before", "after", lineterm="")
    )
    if shown:
        print(shown, flush=True)
    _ask(args, "Apply these changes?")
    return _request(args, None, "PATCH", "/config", patch).split(": ", 1)[0] + ": configuration changed"


def dsn(args: argparse.Namespace) -> str:
    snapshot = read(args)
    name, _ = _api(snapshot, args.member)
    member = snapshot.view.member(name)
    address = host_port(member.conn_url) if member else None
    if address is None:
        raise CtlError(f"member {name} publishes no conn_url")
    return f"host={address[0]} port={address[1]}"


def explain(args: argparse.Namespace) -> str:
    """Each member's (or the named one's) state, last rule and why, whether it may be promoted and which fact says
    so, and its last decisions: why a failover did or did not happen."""
    snapshot = read(args)
    names = [args.member] if args.member else sorted(m.name for m in snapshot.view.members)
    settings = ctl_settings(args)
    parts = []
    for name in names:
        member, url = _api(snapshot, name)
        status, answer = call(member, url, "GET", "/decision", settings)
        if status != 200 or not isinstance(answer, dict):
            raise CtlError(f"{member}: /decision answered {status}: {message(answer)}")
        facts = answer.get("facts", {})
        lines = [f"{member}: {answer['state']}, last rule [{answer['rule']}] {answer['why']}"]
        lines.append(f"  may be promoted: {facts.get('eligible', 'unknown')}")
        lines.append(f"  first in line: {facts.get('first_in_line', 'unknown')}")
        for turn in answer.get("decisions", [])[: args.last]:
            lines.append(f"  {turn['at']} {turn['before']} -> {turn['after']} [{turn['rule']}] {turn['why']}")
        parts.append("\n".join(lines))
    return "\n".join(parts)


def _put(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml(config: dict[str, Any]) -> list[str]:
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False).splitlines()


FORCE = (("--force",), {"action": "store_true", "help": "do not ask for confirmation"})
ArgumentList = tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
ACTING: dict[str, tuple[Callable[[argparse.Namespace], str], str, ArgumentList]] = {
    "switchover": (switchover, "hand the leadership to a replica, now or at --scheduled", (
        (("--leader",), {"help": "the current leader (default: the key's holder)"}),
        (("--candidate",), {"help": "the new leader (default: the best replica)"}),
        (("--scheduled",), {"help": "when, ISO 8601 with a zone"}), FORCE)),
    "failover": (failover, "promote a replica, with or without a healthy leader", (
        (("--candidate",), {"required": True, "help": "the member to promote"}), FORCE)),
    "restart": (restart, "restart Postgres on members", (
        (("members",), {"nargs": "+", "metavar": "MEMBER"}),
        (("--role",), {"choices": ("primary", "replica"), "help": "only members in this role"}),
        (("--pending",), {"action": "store_true", "help": "only members with settings pending a restart"}),
        (("--scheduled",), {"help": "when, ISO 8601 with a zone"}), FORCE)),
    "reinit": (reinit, "re-clone a replica", (
        (("member",), {"metavar": "MEMBER"}),
        (("--from-leader",), {"action": "store_true", "help": "copy the leader, not a clonefrom replica"}),
        (("--wait",), {"action": "store_true", "help": "until it is done (the answer comes once it is)"}), FORCE)),
    "reload": (reload, "reload the members' configuration", ((("members",), {"nargs": "+", "metavar": "MEMBER"}),)),
    "flush": (flush, "cancel a scheduled restart or switchover", (
        (("target",), {"choices": ("restart", "switchover")}),
        (("members",), {"nargs": "*", "metavar": "MEMBER"}), FORCE)),
    "pause": (_pause(True), "maintenance mode: no automatic failover", (
        (("--wait",), {"action": "store_true", "help": "until every member is paused"}),)),
    "resume": (_pause(False), "leave maintenance mode", (
        (("--wait",), {"action": "store_true", "help": "until every member has resumed"}),)),
    "edit-config": (edit_config, "change the cluster-wide configuration (shows the diff first)", (
        (("-s", "--set"), {"action": "append", "metavar": "KEY=VALUE", "help": "a dotted key (empty: remove)"}),
        (("-p", "--pg"), {"action": "append", "metavar": "NAME=VALUE", "help": "a postgresql.parameters entry"}),
        FORCE)),
    "explain": (explain, "why each member is where it is: its last rule and facts, whether it may be promoted", (
        (("member",), {"nargs": "?", "metavar": "MEMBER"}),
        (("--last",), {"type": int, "default": 5, "help": "how many of its last decisions (default 5)"}))),
    "dsn": (dsn, "a libpq connection string for a member (default: the leader)", (
        (("member",), {"nargs": "?", "metavar": "MEMBER"}),)),
}  # fmt: skip
