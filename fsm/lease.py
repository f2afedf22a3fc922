"""The leader lease arithmetic and the timing settings that keep it safe.

The safety argument (architecture guide, section 3): the leader records when it *started* its last successful
renew request. The DCS applied that renew later and expires the key no earlier than `ttl_s` after applying it.
So the leader's own deadline, `renewed_at + ttl_s - safety_margin_s`, falls before anyone else can take the key,
and the margin pays for clock-rate drift and for the time demotion takes.

The leader decides by its deadline whatever the other settings are: its sleep ends at the deadline at the latest
and every DCS request it makes gives up there (`fsm.node.wake_by_s`, `operation_deadline_s`), so the turn that
finds it could not renew comes in time, and the watchdog fence fires at the same deadline if the agent hangs.
What the other settings decide is whether a healthy leader keeps its lease: with a DCS that answers only just
within `retry_timeout_s`, a loop takes up to `loop_wait_s + 2 * retry_timeout_s` between two renewals (Patroni's
rule `loop_wait + 2 * retry_timeout <= ttl`); the renewal must also fit before the deadline with a prompt DCS.
"""

from __future__ import annotations

from fsm.observation import ClusterConfig


def lease_deadline_s(
    renewed_at_s: float | None, config: ClusterConfig, lease_ttl_s: float | None = None
) -> float | None:
    """The monotonic time by which the leader must have stopped writes; None when it never renewed. `lease_ttl_s`
    is the ttl that renewal wrote (the DCS config key may have changed ttl since: the key still lives by the
    one it was written with); None: the configured one."""
    if renewed_at_s is None:
        return None
    ttl_s = config.ttl_s if lease_ttl_s is None else lease_ttl_s
    return renewed_at_s + ttl_s - config.safety_margin_s


def slow_dcs_keeps_lease(config: ClusterConfig) -> bool:
    """Whether a DCS that answers each request only just within retry_timeout still lets a healthy leader renew
    before its deadline: `loop_wait + 2 * retry_timeout + safety_margin <= ttl`. Not required (safety does not
    depend on it, and Patroni's own 30/10/10 misses it by the margin); when it fails, such a DCS can cost the leader
    its lease, which it then gives up in time."""
    return config.loop_wait_s + 2 * config.retry_timeout_s + config.safety_margin_s <= config.ttl_s


def lease_timing_problems(config: ClusterConfig) -> list[str]:
    """Each setting combination that breaks the lease argument or leaves a healthy leader no time to renew, as a
    sentence naming the keys; empty if the settings are sound."""
    problems = []
    if config.safety_margin_s <= 0:
        problems.append("safety_margin must be positive: demotion takes time and clocks drift")
    if config.loop_wait_s <= 0:
        problems.append("loop_wait must be positive")
    patroni_gap_s = config.loop_wait_s + 2 * config.retry_timeout_s
    if patroni_gap_s > config.ttl_s:
        problems.append(
            f"loop_wait ({config.loop_wait_s:g}) + 2 * retry_timeout ({config.retry_timeout_s:g}) = "
            f"{patroni_gap_s:g} s exceeds ttl ({config.ttl_s:g} s): a leader whose DCS answers slowly would lose its "
            "lease between two renewals"
        )
    if config.loop_wait_s + config.safety_margin_s >= config.ttl_s:
        problems.append(
            f"loop_wait ({config.loop_wait_s:g}) + safety_margin ({config.safety_margin_s:g}) is not less than ttl "
            f"({config.ttl_s:g} s): the lease would run out before the next renewal"
        )
    return problems
