"""Re-reading the agent's config file, on SIGHUP or `POST /reload` (Patroni's reload), in the loop's thread between
two turns: the settings that can change live (timings, tags) are applied and Postgres reloads its files; the
postgresql, DCS and restapi sections wait for a restart of regent, and the log says so."""

from __future__ import annotations

import logging

from adapters.errors import ConfigError
from adapters.postgres.values import Result, failed
from runtime.agent import Agent
from runtime.config import RegentConfig, load

log = logging.getLogger("regent")


def reload_config(agent: Agent, config: RegentConfig, why: str) -> Result:
    """`config` is the one the agent started with (a config made in code, without a file: Postgres reloads only)."""
    if config.source is not None:
        try:
            fresh = load(config.source)
        except ConfigError as error:
            log.error("%s: config not reloaded:\n%s", why, error)
            return failed(f"{config.source} not reloaded: " + "; ".join(error.problems))
        agent.local_config = fresh.cluster
        agent.executor.tags = fresh.tags
        agent.dcs.set_ttl(fresh.cluster.ttl_s)
        if (fresh.postgresql, fresh.dcs, fresh.restapi) != (config.postgresql, config.dcs, config.restapi):
            log.warning("%s: postgresql, DCS and restapi changes take effect after a restart of regent", why)
    result = agent.executor.postgres.reload()
    agent.wake.set()
    if result:
        log.info("%s: config reloaded%s", why, f" from {config.source}" if config.source else "")
    else:
        log.error("%s: Postgres did not reload: %s", why, result.detail)
    return result
