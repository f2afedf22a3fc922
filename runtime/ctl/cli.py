"""regentctl: operate a Regent cluster from one command line, as patronictl operates a Patroni one.

`regentctl -c postgres0.yml list` takes the DCS (and its scope) from an agent's config; `--dcs-url
etcd://127.0.0.1:2379 --scope batman` works without one. list, topology, history and show-config read the DCS
directly, so they work while every agent is down. Errors are one line and a non-zero exit: 2 for bad usage or a
bad config, 1 for a cluster that cannot be read.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from adapters.dcs import EtcdSettings, Snapshot, ZooKeeperSettings, connect
from adapters.dcs.layout import REGENT_VERSION
from adapters.errors import ConfigError
from runtime.config import load
from runtime.config.addresses import host_port

from .views import FORMATS, history_rows, member_rows, render, topology_rows

READ_TIMEOUT_S = 5.0


class CtlError(Exception):
    """What the operator reads, one line, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def dcs_settings(args: argparse.Namespace) -> EtcdSettings | ZooKeeperSettings:
    """From `--dcs-url` and `--scope`, else from the config file (`--scope` overrides its scope)."""
    if args.dcs_url:
        if not args.scope:
            raise CtlError("--dcs-url needs --scope (the cluster's name)", 2)
        url = urlsplit(args.dcs_url)
        default_port = {"etcd": 2379, "zookeeper": 2181}.get(url.scheme)
        try:
            hosts = tuple(host_port(part, default_port) for part in url.netloc.split(","))
        except ValueError as error:
            raise CtlError(f"--dcs-url: {error}", 2) from None
        if url.scheme == "etcd":
            return EtcdSettings(args.scope, hosts)
        if url.scheme == "zookeeper":
            return ZooKeeperSettings(args.scope, hosts)
        raise CtlError(f"--dcs-url: {args.dcs_url!r} is not etcd://host:port or zookeeper://host:port", 2)
    if args.config is None:
        raise CtlError("give -c CONFIG.yml (an agent's config), or --dcs-url and --scope", 2)
    try:
        settings = load(args.config).dcs
    except ConfigError as error:
        raise CtlError(f"{args.config}: " + "; ".join(error.problems), 2) from None
    return dataclasses.replace(settings, scope=args.scope) if args.scope else settings


def read(args: argparse.Namespace) -> Snapshot:
    settings = dcs_settings(args)
    dcs = connect("regentctl", settings, READ_TIMEOUT_S)
    try:
        snapshot = dcs.read_cluster()
    finally:
        dcs.close()
    if snapshot is None:
        hosts = ",".join(f"{host}:{port}" for host, port in settings.hosts)
        raise CtlError(f"the DCS at {hosts} did not answer within {READ_TIMEOUT_S:g} s")
    if not snapshot.view.members and snapshot.view.initialize is None:
        raise CtlError(f"no cluster {settings.scope!r} in the DCS (no member and no initialize key)")
    return snapshot


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


def command_version(args: argparse.Namespace) -> str:
    return f"regentctl version {REGENT_VERSION}"


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], str], str]] = {
    "list": (command_list, "the members: role, state, timeline, lag, pending restart, tags"),
    "topology": (command_topology, "the members as a tree: each standby under the member it streams from"),
    "history": (command_history, "the timeline history: each switch, when, and the new leader"),
    "show-config": (command_show_config, "the cluster-wide configuration (the DCS config key)"),
    "version": (command_version, "regentctl's version"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="regentctl", description=__doc__.splitlines()[0])
    top.add_argument("-c", "--config-file", dest="config", type=Path, help="an agent's config (postgres0.yml)")
    top.add_argument("-d", "--dcs-url", help="etcd://host:port or zookeeper://host:port, without a config")
    top.add_argument("-k", "--scope", help="the cluster's name (overrides the config's)")
    top.add_argument("-v", "--verbose", action="store_true", help="log what the DCS clients say (on stderr)")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name in ("list", "topology", "history"):
            sub.add_argument("-f", "--format", choices=FORMATS, default="pretty")
        if name in ("list", "topology"):
            sub.add_argument("-W", "--watch", action="store_true", help="repeat every --interval seconds")
            sub.add_argument("-w", "--interval", type=float, default=2.0, help="seconds between two (default 2)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The clients log each failed try; the operator gets one line unless asking for more.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, format="%(levelname)s %(message)s")
    run, _ = COMMANDS[args.command]
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
