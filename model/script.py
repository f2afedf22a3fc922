"""Scenario scripts: a cluster driven by readable commands, its transcript compared with a golden copy.

    python -m model.script tests/scripts/leader-crash.txt     # print the transcript
    REGENT_REWRITE_GOLDEN=1 pytest tests/test_scripts.py       # rewrite the golden copies, then review the diff

In etcd-io/raft's `testdata/*.txt` style. A script holds one command a line (`#` starts a comment); the world is
the simulator's, so every node runs the node core of `fsm.node`. The transcript echoes each command and, indented
under it, what it caused: every decision that changed a node's state or rule, faults and notes, a violated
invariant, and for `expect` either `ok` or `FAILED: ...`.

Commands:
    start N [sync] [zookeeper] [max-session S] [no-watchdog] [seed K]
                                                        a cluster of N nodes, bootstrapped for 60 s (ZooKeeper
                                                        grants sessions of at most S seconds, default 40)
    tick Ds                                             let D simulated seconds pass
    config KEY VALUE                                    write KEY of the DCS config key (as patronictl
                                                        edit-config does; VALUE in JSON: 20, true)
    FAULT TARGET [Ds]                                   a fault of model.faults (dashes for underscores:
                                                        kill-postgres is postgres_crash), on a node name,
                                                        leader, replica, all or last, lasting D seconds
                                                        (scheduled-restart, scheduled-switchover: D seconds
                                                        ahead)
    expect leader NODE | none | any                     who holds the leader key and serves writes
    expect state NODE STATE                             the node's HA state
    expect member NODE | expect no-member NODE          whether the node's member key is in the DCS
    expect invariants                                   no invariant broken so far
    expect violated INVARIANT                           that invariant broke (a run stops at the first)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from fsm.observation import ClusterConfig
from model.faults import KINDS, SCHEDULED, Fault, inject
from model.world import Settings, World

ALIASES = {"kill-postgres": "postgres_crash", "break-postgres": "postgres_broken"}
BOOT_S = 60.0


class ScriptError(ValueError):
    """A line the script language does not know."""


class Script:
    def __init__(self, world_type: type[World] = World) -> None:
        self.world_type = world_type  # the simulator's World, or one whose agents are another driver of the core
        self.world: World | None = None
        self.out: list[str] = []
        self._seen = 0  # trace lines already reported
        self.failures = 0

    def run(self, lines: Iterable[str]) -> str:
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            self.out.append(line)
            try:
                self._command(line.split())
            except ScriptError as error:
                raise ScriptError(f"line {number}: {error}") from None
            self._report()
        return "\n".join(self.out) + "\n"

    # --- commands -----------------------------------------------------------------------------------------

    def _command(self, words: list[str]) -> None:
        verb, args = words[0], words[1:]
        if verb == "start":
            self._start(args)
            return
        world = self._world()
        if verb == "tick":
            world.run(world.t + _seconds(args, 0))
        elif verb == "config" and len(args) >= 2:
            text = " ".join(args[1:])  # the JSON may hold spaces (a pg_hba line)
            try:
                value = json.loads(text)
            except ValueError:
                raise ScriptError(f"config {args[0]}: {text!r} is not a JSON value") from None
            stored = dict(world.dcs.get("config", world.t) or {})
            world.dcs.put("config", {**stored, args[0]: value}, world.t)
            world.trace.note(world.t, None, f"config {args[0]} = {text}")
            world.run(world.t)  # the agents read it on their next turn (their watch is on the leader key)
        elif verb == "expect":
            self._expect(world, args)
        else:
            kind = ALIASES.get(verb, verb.replace("-", "_"))
            if kind not in KINDS:
                raise ScriptError(f"unknown command {verb!r}")
            target = args[0] if args else "all"
            lasting = _seconds(args, 1) if len(args) > 1 else None
            if kind in SCHEDULED:
                inject(world, Fault(world.t, kind, target, value=lasting or 0.0))
            else:
                inject(world, Fault(world.t, kind, target, lasting))
            world.run(world.t)  # the fault's immediate consequences, in this instant

    def _start(self, args: list[str]) -> None:
        flags = set(args)
        seed = int(args[args.index("seed") + 1]) if "seed" in flags else 0
        max_session = float(args[args.index("max-session") + 1]) if "max-session" in flags else 40.0
        count = int(args[0]) if args and args[0].isdigit() else 3
        config = replace(ClusterConfig(), synchronous_mode="sync" in flags)
        settings = Settings(
            nodes=count,
            config=config,
            dcs_kind="zookeeper" if "zookeeper" in flags else "etcd",
            zookeeper_max_session_s=max_session,
            watchdog="no-watchdog" not in flags,
        )
        self.world = self.world_type(settings, seed)
        self.world.run(BOOT_S)

    def _expect(self, world: World, args: list[str]) -> None:
        if args[:1] == ["leader"] and len(args) == 2:
            serving = world.serving_primary()
            actual = serving.name if serving else "none"
            wanted = actual == args[1] or (args[1] == "any" and serving is not None)
            self._verdict(wanted, f"leader is {actual}")
        elif args[:1] == ["state"] and len(args) == 3:
            node = world.nodes.get(args[1])
            if node is None:
                raise ScriptError(f"no node {args[1]!r}")
            actual = node.state.value if node.alive else "down"
            self._verdict(actual == args[2], f"{node.name} is {actual}")
        elif args[:1] in (["member"], ["no-member"]) and len(args) == 2:
            present = world.dcs.get(f"members/{args[1]}", world.t) is not None
            actual = f"the member key of {args[1]} is {'' if present else 'not '}there"
            self._verdict(present == (args[0] == "member"), actual)
        elif args == ["invariants"]:
            broken = [v["invariant"] for v in world.trace.violations]
            self._verdict(not broken, f"violated: {', '.join(broken)}")
        elif args[:1] == ["violated"] and len(args) == 2:
            broken = [v["invariant"] for v in world.trace.violations]
            self._verdict(args[1] in broken, f"violated: {', '.join(broken) or 'nothing'}")
        else:
            raise ScriptError(f"unknown expectation {' '.join(args)!r}")

    def _verdict(self, ok: bool, actual: str) -> None:
        self.failures += not ok
        self.out.append("  ok" if ok else f"  FAILED: {actual}")

    # --- the transcript -------------------------------------------------------------------------------------

    def _report(self) -> None:
        if self.world is None:
            return
        lines = self.world.trace.lines
        self.out.extend("  " + _compact(line) for line in lines[self._seen :])
        self._seen = len(lines)

    def _world(self) -> World:
        if self.world is None:
            raise ScriptError("the first command must be start")
        return self.world


def _seconds(args: list[str], index: int) -> float:
    try:
        text = args[index]
    except IndexError:
        raise ScriptError("a duration is missing (as 10s)") from None
    if not text.endswith("s"):
        raise ScriptError(f"a duration ends with s, got {text!r}")
    try:
        return float(text[:-1])
    except ValueError:
        raise ScriptError(f"not a duration: {text!r}") from None


def _compact(line: str) -> str:
    """A trace line without the `why` (the facts are long; the rule names what fired)."""
    head, bracket, _ = line.partition("] ")
    return (head + "]") if bracket and "[" in head else line.rstrip()


def run_file(path: Path, world_type: type[World] = World) -> tuple[str, int]:
    script = Script(world_type)
    return script.run(path.read_text().splitlines()), script.failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.script", description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path)
    args = parser.parse_args(argv)
    try:
        transcript, failures = run_file(args.script)
    except (OSError, ScriptError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(transcript, end="")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
