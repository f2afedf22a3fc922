"""Fresh WAL positions of the other members for an election.

With the leader key free, who goes first is decided on WAL positions, and members publish theirs only once a
loop: a less advanced replica could win on stale numbers and the more advanced one would then need a rewind. So,
as Patroni does, a follower asks each member's REST API for its position right before deciding; a member that
does not answer in time keeps the position it published.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from fsm.observation import ClusterView, Member

log = logging.getLogger(__name__)


def wal_position_of(api_url: str, timeout_s: float) -> int | None:
    """The furthest WAL position the member at `api_url` (its `/patroni` URL) reports, or None."""
    try:
        with urllib.request.urlopen(api_url, timeout=timeout_s) as answer:  # our own members' URLs, from the DCS
            status = json.load(answer)
    except (OSError, ValueError) as error:
        log.debug("no position from %s: %s", api_url, error)
        return None
    xlog = status.get("xlog") if isinstance(status, dict) else None
    if not isinstance(xlog, dict):
        return None
    positions = [value for value in xlog.values() if isinstance(value, int) and not isinstance(value, bool)]
    return max(positions) if positions else None


def with_fresh_positions(view: ClusterView, me: str, timeout_s: float) -> ClusterView:
    """`view` with the other members' WAL positions asked for now, when nobody holds the leader key."""
    others = [member for member in view.members if member.name != me and member.api_url]
    if view.leader is not None or not others:
        return view
    with ThreadPoolExecutor(max_workers=len(others)) as pool:
        positions = pool.map(lambda member: wal_position_of(member.api_url, timeout_s), others)
        answers = dict(zip((member.name for member in others), positions, strict=True))

    def fresh(member: Member) -> Member:
        position = answers.get(member.name)
        return member if position is None else replace(member, wal_position=position)

    return replace(view, members=tuple(fresh(member) for member in view.members))
