"""regentctl's commands that act: each goes through a member's REST API (the leader's for cluster-wide requests),
which hands it to the HA loop; the answer is the agent's, one line. They ask for confirmation unless --force."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from adapters.dcs import Snapshot
from runtime.api.requests import config_etag

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


def _request(
    args: argparse.Namespace,
    member: str | None,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    said: str | None = None,
) -> str:
    """`member: the agent's answer` (or `said` in its place: an answer that is a whole document); one CtlError line
    for a refusal."""
    snapshot = read(args)
    name, url = _api(snapshot, member)
    status, answer = call(name, url, method, path, ctl_settings(args), body, headers)
    if status >= 400:
        raise CtlError(f"{name}: {message(answer)} (HTTP {status})")
    if said is not None:
        return f"{name}: {said}"
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
    """The named members (all when none), less those --role or --pending leave out, as patronictl picks them; the
    agents check the same conditions again when they act."""
    snapshot = read(args)
    view = snapshot.view
    leader = view.leader.holder if view.leader else None
    names = args.members or sorted(member.name for member in view.members)
    for name in names:
        _api(snapshot, name)  # an unknown name is an error before anything restarts
    chosen = [
        name
        for name in names
        if (args.role is None or (args.role == "primary") == (name == leader))
        and (not args.pending or getattr(view.member(name), "pending_restart", False))
    ]
    if not chosen:
        raise CtlError(f"no member of {', '.join(names)} matches --role/--pending: nothing to restart")
    body = {"role": args.role, "restart_pending": args.pending or None, "schedule": args.scheduled}
    body = {key: value for key, value in body.items() if value}
    _ask(args, f"Restart {', '.join(chosen)}{' at ' + args.scheduled if args.scheduled else ''}?")
    return "\n".join(_request(args, member, "POST", "/restart", body) for member in chosen)


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
        said = f"cluster management is {'paused' if paused else 'resumed'}"
        answer = _request(args, None, "PATCH", "/config", {"pause": True if paused else None}, said=said)
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
    """The cluster-wide configuration changed in $EDITOR, from a file (--apply merges it, --replace replaces), or by
    --set/-p; the diff is shown, and the result written whole with If-Match on the version read, so a change made
    meanwhile by someone else is refused rather than overwritten (Patroni's edit-config compares and sets too)."""
    snapshot = read(args)
    before = snapshot.config or {}
    after = _edited(args, before)
    shown = "\n".join(difflib.unified_diff(_yaml(before), _yaml(after), "before", "after", lineterm=""))
    if not shown:
        return "Not changed"
    print(shown, flush=True)
    _ask(args, "Apply these changes?")
    return _request(args, None, "PUT", "/config", after, {"If-Match": config_etag(snapshot)}, "configuration changed")


def _edited(args: argparse.Namespace, before: dict[str, Any]) -> dict[str, Any]:
    if args.replace:
        if args.apply or args.set or args.pg:
            raise CtlError("edit-config: --replace takes the whole configuration: no --apply, --set or -p with it", 2)
        return _mapping(_read_text(args.replace), args.replace)
    patch = _mapping(_read_text(args.apply), args.apply) if args.apply else {}
    for text in args.set or ():
        key, _, value = text.partition("=")
        _put(patch, key.split("."), yaml.safe_load(value) if value else None)
    for text in args.pg or ():
        name, _, value = text.partition("=")
        _put(patch, ["postgresql", "parameters", name], yaml.safe_load(value) if value else None)
    if patch or args.apply:
        return _merged(before, patch)
    return _mapping(_in_editor(_text(before)), "the edited configuration")


def _in_editor(text: str) -> str:
    """`text` after the operator edited it in $EDITOR (else `editor`, else `vi`), as patronictl opens it."""
    command = os.environ.get("EDITOR") or shutil.which("editor") or shutil.which("vi")
    if not command:
        raise CtlError("edit-config: no editor: set $EDITOR, or give --set, -p, --apply or --replace", 2)
    with tempfile.NamedTemporaryFile("w+", prefix="regent-config-", suffix=".yaml") as file:
        file.write(text)
        file.flush()
        try:
            done = subprocess.run([*shlex.split(command), file.name], check=False)
        except OSError as error:
            raise CtlError(f"edit-config: cannot run the editor {command!r}: {error.strerror}", 2) from None
        if done.returncode != 0:
            raise CtlError(f"edit-config: the editor {command!r} exited {done.returncode}: nothing changed")
        return Path(file.name).read_text()


def _read_text(source: str) -> str:
    """A file's text, or stdin's for `-`."""
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as error:
        raise CtlError(f"edit-config: {source}: cannot read: {error.strerror}", 2) from None


def _mapping(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CtlError(f"edit-config: {source} is not valid YAML: {str(error).splitlines()[0]}", 2) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CtlError(f"edit-config: {source} is not a YAML mapping", 2)
    return loaded


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


def _text(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False) if config else ""


def _yaml(config: dict[str, Any]) -> list[str]:
    return _text(config).splitlines()


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
        (("members",), {"nargs": "*", "metavar": "MEMBER", "help": "default: every member"}),
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
        (("--apply",), {"metavar": "FILE", "help": "merge this YAML file's changes (- for stdin)"}),
        (("--replace",), {"metavar": "FILE", "help": "replace the configuration with this YAML file (- for stdin)"}),
        FORCE)),
    "explain": (explain, "why each member is where it is: its last rule and facts, whether it may be promoted", (
        (("member",), {"nargs": "?", "metavar": "MEMBER"}),
        (("--last",), {"type": int, "default": 5, "help": "how many of its last decisions (default 5)"}))),
    "dsn": (dsn, "a libpq connection string for a member (default: the leader)", (
        (("member",), {"nargs": "?", "metavar": "MEMBER"}),)),
}  # fmt: skip
