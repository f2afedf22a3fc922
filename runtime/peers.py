"""Fresh WAL positions of the other members for an election: each member's REST API asked for its position.

The node core says whom to ask and when (`fsm.node.peers_to_ask`: a follower, with the leader key free) and
merges the answers (`with_positions`); this module only asks.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from fsm.observation import Member

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


def positions_of(members: Sequence[Member], timeout_s: float) -> dict[str, int | None]:
    """Each member's WAL position as its REST API reports it now, asked all at once; None where it did not answer
    within `timeout_s`. Whom to ask, and when, is the node core's (`fsm.node.peers_to_ask`)."""
    if not members:
        return {}
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        positions = pool.map(lambda member: wal_position_of(member.api_url, timeout_s), members)
        return dict(zip((member.name for member in members), positions, strict=True))
