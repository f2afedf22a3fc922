"""`regent CONFIG.yml` runs one node's agent; `regent --validate CONFIG.yml` only checks the config.

Exit status: 0 after a clean shutdown (or a valid config), 2 for a broken config (one line per problem, naming
the key), 1 when the agent could not start.
"""

from __future__ import annotations

import argparse
import errno
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

from adapters.callbacks import CallbackRunner
from adapters.dcs import connect
from adapters.dcs.layout import REGENT_VERSION
from adapters.errors import ConfigError
from adapters.postgres.process import listen_conflict
from adapters.postgres.runas import OsUser
from adapters.postgres.server import Postgres
from adapters.watchdog import Watchdog
from runtime.agent import Agent
from runtime.api import ApiServer
from runtime.config import RegentConfig, load
from runtime.config.settings import LogSettings
from runtime.executor import Executor
from runtime.peers import PeerClient, peer_tls
from runtime.postmaster_watch import PostmasterWatch
from runtime.reload import reload_config

log = logging.getLogger("regent")


def build(config: RegentConfig) -> tuple[Agent, ApiServer]:
    """Wire the adapters to the decision loop and the REST API (nothing starts yet)."""
    pg = config.postgresql
    dcs = connect(config.name, config.dcs, config.cluster.retry_timeout_s)
    dcs.set_ttl(config.cluster.ttl_s)
    postgres = Postgres(pg)
    postgres.check_access()
    callbacks = CallbackRunner(dict(pg.callbacks), pg.scope, run_as_user=pg.os_user)  # as Postgres runs, not root
    record = pg.own_dir / "watchdog_fence.pid"  # a newer agent on this data directory ends a fence left here
    fence = Watchdog(
        config.watchdog.mode, pg.data_dir / "postmaster.pid", config.watchdog.device, record, postgres.runner.write_file
    )
    scheme = "https" if config.restapi.certfile else "http"
    executor = Executor(
        name=config.name,
        dcs=dcs,
        postgres=postgres,
        fence=fence,
        callbacks=callbacks,
        conn_url=f"postgres://{pg.replication.username}@{pg.connect_host}:{pg.connect_port}/postgres",
        api_url=f"{scheme}://{config.restapi.connect_address}/patroni",
        tags=config.tags,
        replica_methods=pg.create_replica_methods,
        bootstrap_config=config.bootstrap_dcs,
        peers=PeerClient(config.restapi.auth, peer_tls(config.restapi, config.ctl)),
    )
    methods = tuple(method.name for method in pg.create_replica_methods)
    agent = Agent(config.name, config.cluster, dcs, executor, replica_methods=methods)
    return agent, ApiServer(agent, config)


def run(config: RegentConfig) -> int:
    pg = config.postgresql
    conflict = listen_conflict(pg.data_dir, pg.listen_addresses, pg.port)
    if conflict is not None:  # another process on Postgres's port: every start would fail the same way
        raise OSError(errno.EADDRINUSE, f"postgresql.listen: cannot listen on {conflict}")
    agent, api = build(config)
    watch = PostmasterWatch(config.postgresql.data_dir, agent.wake.set)
    signal.signal(signal.SIGTERM, lambda *_: agent.shutdown())
    signal.signal(signal.SIGINT, lambda *_: agent.shutdown())
    # Applied by the loop between two turns: a handler runs in the loop's own thread, possibly mid-operation.
    signal.signal(signal.SIGHUP, lambda *_: agent.call_soon(lambda: reload_config(agent, config, "SIGHUP")))
    api.start()
    watch.start()
    log.info("regent %s starting (scope %s)", config.name, config.postgresql.scope)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    try:
        agent.run()
    finally:
        watch.stop()
        api.stop()
        agent.executor.callbacks.close()
        fence = agent.executor.fence
        if getattr(fence, "armed", False) and agent.executor.postgres.running:
            # Leaving without having stopped writes (a failed shutdown turn, a bug): the fence outlives the agent and
            # kills Postgres at the lease deadline. Closing it here would disarm it and leave a writable orphan.
            log.error("exiting while Postgres runs and the watchdog is armed: it fires at the lease deadline")
        else:
            fence.close()  # type: ignore[attr-defined]
        agent.dcs.close()  # after the shutdown turn: on ZooKeeper this ends the session
    log.info("regent %s stopped", config.name)
    return 0 if agent.stopped.is_set() else 1


LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
QUIET = {"etcd.client": "CRITICAL", "transitions": "WARNING"}  # a line per failed request, three per decision


def setup_logging(settings: LogSettings, level: str | None = None, owner: OsUser | None = None) -> None:
    """The config's `log:` section: level, format, other loggers' levels, and a rotated file in `dir` (made
    `owner`'s when we are root, so that the agent can later run as that user on the same files)."""
    handler: logging.Handler = logging.StreamHandler()
    if settings.dir is not None:
        log_file = settings.dir / "regent.log"
        made = [path for path in (settings.dir, log_file) if not path.exists()]
        settings.dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=settings.file_size, backupCount=settings.file_num
        )
        if owner is not None and owner.switch:
            for path in made:  # only what we made: a folder the operator gave stays as it is
                os.chown(path, owner.uid, owner.gid)
    handler.setFormatter(logging.Formatter(settings.format, settings.dateformat))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.level)
    for name, name_level in {**QUIET, **dict(settings.loggers)}.items():
        logging.getLogger(name).setLevel(name_level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="regent", description=__doc__.splitlines()[0], epilog="Operate the cluster with regentctl (--help)."
    )
    parser.add_argument("config", type=Path, help="the node's YAML config (postgres0.yml)")
    parser.add_argument(
        "--validate", "--validate-config", action="store_true", help="check the config and exit (Patroni's name too)"
    )
    parser.add_argument("--version", action="version", version=f"regent {REGENT_VERSION}")
    parser.add_argument("--log-level", choices=LEVELS, help="overrides the config's log.level")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        if args.validate:
            for warning in config.warnings:
                print(f"{args.config}: warning: {warning}", file=sys.stderr)
            print(f"{args.config}: valid (member {config.name}, scope {config.postgresql.scope})")
            return 0
        setup_logging(config.log, args.log_level, OsUser.resolve(config.postgresql.os_user))
        return run(config)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    except OSError as error:  # the REST API's port taken, a directory that cannot be made
        log.error("regent could not start: %s", error)
        return 1
