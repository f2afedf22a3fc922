"""The leader lease arithmetic and the timing settings that keep it safe.

The safety argument (architecture guide, section 3): the leader records when it *started* its last successful
renew request. The DCS applied that renew later and expires the key no earlier than `ttl_s` after applying it.
So the leader's own deadline, `renewed_at + ttl_s - safety_margin_s`, falls before anyone else can take the key,
and the margin pays for clock-rate drift and for the time demotion takes.

The leader decides once per loop. A loop sleeps `loop_wait_s` and each DCS operation (the read that builds the
observation, the renew) gives up after `retry_timeout_s`, so the next decision after a successful renew comes at
most `loop_wait_s + 2 * retry_timeout_s` after that renew started. That is Patroni's rule plus the margin.
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


def lease_timing_problems(config: ClusterConfig) -> list[str]:
    """Each setting combination that breaks the lease argument, as a sentence naming the keys; empty if safe."""
    problems = []
    worst_gap_s = config.loop_wait_s + 2 * config.retry_timeout_s + config.safety_margin_s
    if worst_gap_s > config.ttl_s:
        problems.append(
            f"loop_wait ({config.loop_wait_s:g}) + 2 * retry_timeout ({config.retry_timeout_s:g}) + "
            f"safety_margin ({config.safety_margin_s:g}) = {worst_gap_s:g} s exceeds ttl ({config.ttl_s:g} s): "
            "a leader could keep writing after its lease expired"
        )
    if config.safety_margin_s <= 0:
        problems.append("safety_margin must be positive: demotion takes time and clocks drift")
    if config.loop_wait_s <= 0:
        problems.append("loop_wait must be positive")
    return problems
