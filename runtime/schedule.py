"""Scheduled times: Patroni's ISO 8601 text with a zone, read as a wall-clock time, and the same instant on the
agent's monotonic clock, the only clock the decision core knows. The conversion happens at each turn's reading
(a failover key's `scheduled_at`) or once when the REST API takes a request (a restart's `schedule`); a step of
the wall clock afterwards (NTP, an operator's `date`) moves neither."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from fsm.observation import ClusterView


class BadTime(ValueError):
    """A scheduled time that cannot be used; the message says why."""


class NotATime(BadTime):
    """Text that is not an ISO 8601 time at all (Patroni answers 422 for it, 400 for the other problems)."""


def parse_time(text: object, key: str) -> datetime:
    """`text` as an aware datetime; BadTime when it is not ISO 8601 text or has no zone."""
    if not isinstance(text, str):
        raise BadTime(f"{key}: expected an ISO 8601 time with a zone, got {text!r}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise NotATime(f"{key}: {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise BadTime(f"{key}: give a time zone (as 2024-05-01T10:00:00+00:00)")
    return when


def monotonic_at(when: datetime, wall_now_s: float, monotonic_now_s: float) -> float:
    """The reading of the monotonic clock at the wall-clock instant `when`, both clocks read now."""
    return monotonic_now_s + (when.timestamp() - wall_now_s)


def with_due_times(view: ClusterView, wall_now_s: float, monotonic_now_s: float) -> ClusterView:
    """`view` with its failover key's `scheduled_at` as `due_s` on the monotonic clock (left None when the text is
    not a time with a zone: the core never carries out such a key, and the leader clears it)."""
    failover = view.failover
    if failover is None or failover.scheduled_at is None:
        return view
    try:
        due_s = monotonic_at(parse_time(failover.scheduled_at, "scheduled_at"), wall_now_s, monotonic_now_s)
    except BadTime:
        return view
    return replace(view, failover=replace(failover, due_s=max(0.0, due_s)))
