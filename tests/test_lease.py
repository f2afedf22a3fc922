"""The lease arithmetic and the timing settings that break the safety argument."""

from __future__ import annotations

from fsm.lease import lease_deadline_s, lease_timing_problems
from fsm.observation import ClusterConfig


def test_deadline_is_renewal_start_plus_ttl_minus_margin():
    config = ClusterConfig(ttl_s=30, safety_margin_s=2)
    assert lease_deadline_s(100.0, config) == 128.0
    assert lease_deadline_s(None, config) is None


def test_default_timing_is_safe():
    assert lease_timing_problems(ClusterConfig()) == []


def test_patroni_defaults_leave_no_room_for_the_margin():
    problems = lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=10, retry_timeout_s=10, safety_margin_s=2))
    assert problems == [
        "loop_wait (10) + 2 * retry_timeout (10) + safety_margin (2) = 32 s exceeds ttl (30 s): "
        "a leader could keep writing after its lease expired"
    ]


def test_zero_margin_and_zero_loop_wait_are_rejected():
    problems = lease_timing_problems(ClusterConfig(ttl_s=60, loop_wait_s=0, safety_margin_s=0))
    assert problems == [
        "safety_margin must be positive: demotion takes time and clocks drift",
        "loop_wait must be positive",
    ]


def test_timing_exactly_at_ttl_and_small_positive_settings_are_safe():
    """Boundaries: a worst gap equal to ttl still fits (the key expires no earlier than ttl after the renew), and
    any positive loop_wait and safety_margin, below one second too, are accepted."""
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=10, retry_timeout_s=9, safety_margin_s=2)) == []
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=1, retry_timeout_s=9, safety_margin_s=0.5)) == []
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=0.5, retry_timeout_s=9, safety_margin_s=1)) == []
