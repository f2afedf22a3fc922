"""The lease arithmetic and the timing settings that break the safety argument."""

from __future__ import annotations

from fsm.lease import lease_deadline_s, lease_timing_problems, slow_dcs_keeps_lease
from fsm.observation import ClusterConfig


def test_deadline_is_renewal_start_plus_ttl_minus_margin():
    config = ClusterConfig(ttl_s=30, safety_margin_s=2)
    assert lease_deadline_s(100.0, config) == 128.0
    assert lease_deadline_s(None, config) is None


def test_default_timing_is_safe():
    assert lease_timing_problems(ClusterConfig()) == []


def test_patroni_s_own_timings_are_sound():
    """ttl 30, loop_wait 10, retry_timeout 10 (Patroni's defaults and sample files): the leader's requests and
    sleep end at its deadline, so the margin need not fit inside loop_wait + 2 * retry_timeout."""
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=10, retry_timeout_s=10, safety_margin_s=2)) == []


def test_a_slow_dcs_gap_beyond_ttl_is_refused_naming_the_keys():
    problems = lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=10, retry_timeout_s=11, safety_margin_s=2))
    assert problems == [
        "loop_wait (10) + 2 * retry_timeout (11) = 32 s exceeds ttl (30 s): a leader whose DCS answers slowly "
        "would lose its lease between two renewals"
    ]


def test_no_room_to_renew_before_the_deadline_is_refused():
    problems = lease_timing_problems(ClusterConfig(ttl_s=12, loop_wait_s=10, retry_timeout_s=1, safety_margin_s=2))
    assert problems == [
        "loop_wait (10) + safety_margin (2) is not less than ttl (12 s): the lease would run out before the next "
        "renewal"
    ]


def test_zero_margin_and_zero_loop_wait_are_rejected():
    problems = lease_timing_problems(ClusterConfig(ttl_s=60, loop_wait_s=0, safety_margin_s=0))
    assert problems == [
        "safety_margin must be positive: demotion takes time and clocks drift",
        "loop_wait must be positive",
    ]


def test_timing_exactly_at_the_boundaries_and_small_positive_settings_are_sound():
    """Boundaries: loop_wait + 2 * retry_timeout equal to ttl still fits, and any positive loop_wait and
    safety_margin, below one second too, are accepted; loop_wait + safety_margin just under ttl fits."""
    assert (
        lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=10, retry_timeout_s=10, safety_margin_s=19.9)) == []
    )
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=1, retry_timeout_s=9, safety_margin_s=0.5)) == []
    assert lease_timing_problems(ClusterConfig(ttl_s=30, loop_wait_s=0.5, retry_timeout_s=9, safety_margin_s=1)) == []


def test_a_slow_dcs_keeps_the_lease_only_with_room_for_two_retries():
    # loop_wait 10 + 2 x retry_timeout 8 + safety_margin 2 = 28 s
    fits = ClusterConfig(ttl_s=28.0, loop_wait_s=10.0, retry_timeout_s=8.0, safety_margin_s=2.0)
    assert slow_dcs_keeps_lease(fits)  # exactly: still in time
    assert slow_dcs_keeps_lease(ClusterConfig(ttl_s=30.0, loop_wait_s=10.0, retry_timeout_s=8.0))
    assert not slow_dcs_keeps_lease(ClusterConfig(ttl_s=27.9, loop_wait_s=10.0, retry_timeout_s=8.0))
    assert not slow_dcs_keeps_lease(ClusterConfig(ttl_s=30.0, loop_wait_s=10.0, retry_timeout_s=10.0))  # Patroni's
