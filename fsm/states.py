"""The five states of a Regent node, and what must hold while a node is in each."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A node's HA state. Each member's docstring says what the node does there and what must hold."""

    def __new__(cls, value: str, doc: str) -> State:
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    BOOTSTRAP = (
        "bootstrap",
        """No usable data directory, or the cluster is not initialized yet. The node races for the `initialize`
        key; the winner runs initdb and goes on to take the leader key; the others wait for a running leader and
        clone from it. Holds: Postgres never accepts writes; a data directory of another cluster is never joined.""",
    )
    FOLLOWER = (
        "follower",
        """Postgres runs as a standby of the leader (or waits read-only while there is none) and the node publishes
        its WAL position. It races for the leader key only when the key is gone and it is eligible and first in
        line. Holds: Postgres never accepts writes; the node does not hold the leader key.""",
    )
    CANDIDATE = (
        "candidate",
        """In the leader race: tries to create the leader key while it stays eligible, and promotes only once the
        observation shows it holding the key with a fresh lease. Holds: Postgres never accepts writes.""",
    )
    LEADER = (
        "leader",
        """Holds the leader lease and renews it every loop; runs Postgres read-write; serves switchover requests;
        keeps the sync standby, the initialize key, the history and the replication slots up to date.
        Holds: Postgres accepts writes only before the node's own lease deadline.""",
    )
    DEMOTING = (
        "demoting",
        """Leaving the writable role: stops writes first, then releases (or abandons) the leader key, then rejoins
        as a standby: directly when its timeline agrees with the leader's, after pg_rewind when it diverged,
        by re-cloning when rewind is impossible. A follower whose history forked from the leader's comes here to
        be repaired too. Holds: once the first action succeeded, Postgres accepts no writes.""",
    )


def describe(state: State) -> str:
    """The state's docstring on one line."""
    return " ".join((state.__doc__ or "").split())
