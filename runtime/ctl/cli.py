"""regentctl: operate a Regent cluster from one command line, as patronictl operates a Patroni one.

`regentctl -c postgres0.yml list` takes the DCS (and its scope) from an agent's config; `--dcs-url
etcd://127.0.0.1:2379 --scope batman` works without one. list, topology, history and show-config read the DCS
directly, so they work while every agent is down. Errors are one line and a non-zero exit: 2 for bad usage or a
bad config, 1 for a cluster that cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from adapters.dcs import Snapshot
from adapters.dcs.layout import REGENT_VERSION

from .acting import ACTING
from .context import dcs_settings, read
from .rest import CtlError
from .views import FORMATS, history_rows, member_rows, render, topology_rows


def show_members(args: argparse.Namespace, rows_of: Callable[[Snapshot], list[dict[str, object]]]) -> str:
    snapshot = read(args)
    scope = args.scope or dcs_settings(args).scope
    title = f"Cluster: {scope} ({snapshot.view.initialize or 'uninitialized'})"
    text = render(rows_of(snapshot), args.format, title)
    if args.format == "pretty" and (snapshot.config or {}).get("pause"):
        text += "\n Maintenance mode: on"
    return text


def command_list(args: argparse.Namespace) -> str:
    return show_members(args, lambda snapshot: member_rows(snapshot.view))


def command_topology(args: argparse.Namespace) -> str:
    return show_members(args, lambda snapshot: topology_rows(snapshot.view))


def command_history(args: argparse.Namespace) -> str:
    return render(history_rows(read(args).view), args.format)


def command_show_config(args: argparse.Namespace) -> str:
    return yaml.safe_dump(read(args).config or {}, sort_keys=True, default_flow_style=False).rstrip()


def command_diagram(args: argparse.Namespace) -> str:
    """The state machine drawn from the rule table itself (the same drawing as docs/state-machine.svg)."""
    from model import diagram  # the drawing code lives with the simulator's; it reads fsm/ only

    return diagram.render_svg() if args.format == "svg" else diagram.mermaid()


def command_version(args: argparse.Namespace) -> str:
    return f"regentctl version {REGENT_VERSION}"


READING: dict[str, tuple[Callable[[argparse.Namespace], str], str]] = {
    "list": (command_list, "the members: role, state, timeline, lag, pending restart, tags"),
    "topology": (command_topology, "the members as a tree: each standby under the member it streams from"),
    "history": (command_history, "the timeline history: each switch, when, and the new leader"),
    "show-config": (command_show_config, "the cluster-wide configuration (the DCS config key)"),
    "diagram": (command_diagram, "the state machine, drawn from the rule table the agents run"),
    "version": (command_version, "regentctl's version"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="regentctl", description=__doc__.splitlines()[0])
    top.add_argument("-c", "--config-file", dest="config", type=Path, help="an agent's config (postgres0.yml)")
    top.add_argument("-d", "--dcs-url", help="etcd://, etcd3:// or zookeeper://host:port, without a config")
    top.add_argument("-k", "--scope", help="the cluster's name (overrides the config's)")
    top.add_argument("-v", "--verbose", action="store_true", help="log what the DCS clients say (on stderr)")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in READING.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name in ("list", "topology", "history"):
            sub.add_argument("-f", "--format", choices=FORMATS, default="pretty")
        if name == "diagram":
            sub.add_argument("--format", choices=("svg", "mermaid"), default="mermaid")
        if name in ("list", "topology"):
            sub.add_argument("-W", "--watch", action="store_true", help="repeat every --interval seconds")
            sub.add_argument("-w", "--interval", type=float, default=2.0, help="seconds between two (default 2)")
    for name, (_, help_text, arguments) in ACTING.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            sub.add_argument(*flags, **options)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The clients log each failed try; the operator gets one line unless asking for more.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, format="%(levelname)s %(message)s")
    run = READING[args.command][0] if args.command in READING else ACTING[args.command][0]
    try:
        while True:
            print(run(args), flush=True)
            if not getattr(args, "watch", False):
                return 0
            time.sleep(args.interval)
    except CtlError as error:
        print(f"regentctl: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 130
