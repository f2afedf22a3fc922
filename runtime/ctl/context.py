"""Where regentctl finds the cluster: the DCS and scope from an agent's config or from --dcs-url and --scope,
the REST login and TLS from the config's `ctl` section, and one read of the whole cluster."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from urllib.parse import urlsplit

from adapters.dcs import EtcdSettings, Snapshot, ZooKeeperSettings, connect
from adapters.errors import ConfigError
from runtime.config import RegentConfig, load
from runtime.config.addresses import host_port
from runtime.config.settings import CtlSettings

from .rest import CtlError

READ_TIMEOUT_S = 5.0


def dcs_settings(args: argparse.Namespace) -> EtcdSettings | ZooKeeperSettings:
    """From `--dcs-url` and `--scope`, else from the config file (`--scope` overrides its scope)."""
    if args.dcs_url:
        if not args.scope:
            raise CtlError("--dcs-url needs --scope (the cluster's name)", 2)
        url = urlsplit(args.dcs_url)
        default_port = {"etcd": 2379, "etcd3": 2379, "zookeeper": 2181}.get(url.scheme)
        try:
            hosts = tuple(host_port(part, default_port) for part in url.netloc.split(","))
        except ValueError as error:
            raise CtlError(f"--dcs-url: {error}", 2) from None
        if url.scheme in ("etcd", "etcd3"):
            return EtcdSettings(args.scope, hosts, api_version=3 if url.scheme == "etcd3" else 2)
        if url.scheme == "zookeeper":
            return ZooKeeperSettings(args.scope, hosts)
        raise CtlError(f"--dcs-url: {args.dcs_url!r} is not etcd://, etcd3:// or zookeeper://host:port", 2)
    config = config_file(args)
    if config is None:
        raise CtlError("give -c CONFIG.yml (an agent's config), or --dcs-url and --scope", 2)
    return dataclasses.replace(config.dcs, scope=args.scope) if args.scope else config.dcs


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


def config_file(args: argparse.Namespace) -> RegentConfig | None:
    """The agent's config given with -c (None without one), read and checked once per run."""
    return None if args.config is None else _load(args.config)


@functools.cache
def _load(path: Path) -> RegentConfig:
    try:
        return load(path)
    except ConfigError as error:
        raise CtlError(f"{path}: " + "; ".join(error.problems), 2) from None


def ctl_settings(args: argparse.Namespace) -> CtlSettings:
    """The REST login and TLS settings: the config's `ctl` section, else none (a cluster without auth)."""
    config = config_file(args)
    return config.ctl if config is not None else CtlSettings()
