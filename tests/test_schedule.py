"""Scheduled times as the agent reads them: Patroni's ISO 8601 text with a zone, on the agent's monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fsm.observation import ClusterView, FailoverRequest
from runtime.schedule import BadTime, monotonic_at, parse_time, with_due_times

WALL = datetime(2030, 1, 1, 10, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "not an ISO 8601 time"), (7, "expected an ISO 8601 time"), ("2030-01-01T10:00:00", "time zone")],
)
def test_a_time_needs_iso_text_with_a_zone(text: object, message: str) -> None:
    with pytest.raises(BadTime, match=message):
        parse_time(text, "schedule")


def test_the_wall_clock_instant_becomes_a_monotonic_reading() -> None:
    when = parse_time("2030-01-01T11:00:05+01:00", "schedule")  # 5 s after WALL, written in another zone
    assert monotonic_at(when, WALL, monotonic_now_s=500.0) == 505.0
    assert monotonic_at(parse_time("2016-01-14T10:09:57.1394Z", "x"), WALL, 1e9) < 1e9  # Patroni's own example


def test_the_failover_keys_time_is_converted_and_an_unreadable_one_left_unconverted() -> None:
    def view(scheduled_at: str | None) -> ClusterView:
        return ClusterView(failover=FailoverRequest("n0", "n1", scheduled_at=scheduled_at))

    assert with_due_times(view("2030-01-01T10:00:30+00:00"), WALL, 100.0).failover.due_s == 130.0
    assert with_due_times(view("next tuesday"), WALL, 100.0).failover.due_s is None  # never due; the leader clears it
    assert with_due_times(view(None), WALL, 100.0) == view(None)
