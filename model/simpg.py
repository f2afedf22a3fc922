"""A simulated Postgres: data directory, role, WAL position, timelines, and what it reports to the agent.

WAL is a byte position. Each promotion starts a new timeline and a new *segment*: a unique id the real server
does not have, which lets the checker see when two servers' histories diverged even though Postgres numbered
their timelines alike (two nodes promoted from timeline 1 both call their timeline 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsm.observation import DataDir, PostgresState, TimelineSwitch


@dataclass
class Data:
    """What a data directory holds: the cluster, its timeline history and how far its WAL goes."""

    sysid: str
    timeline: int = 1
    segment: int = 0
    wal: int = 0
    history: tuple[TimelineSwitch, ...] = ()
    past: tuple[tuple[int, int], ...] = ()  # (segment, WAL position where it ended) for each earlier timeline

    def end_of(self, segment: int) -> int | None:
        """Where `segment` ends in this history: None if it is not in it, a huge number if it is the current one."""
        if segment == self.segment:
            return 1 << 62
        return next((end for seg, end in self.past if seg == segment), None)

    def reach(self, segment: int) -> int | None:
        """How far this history's WAL goes on `segment` (None: not at all)."""
        return self.wal if segment == self.segment else self.end_of(segment)


@dataclass
class SimPostgres:
    data: Data | None = None
    broken: bool = False  # a data directory that cannot start (and cannot be cloned over without moving it aside)
    running: bool = False
    in_recovery: bool = False
    read_only: bool = False
    following: str | None = None
    sync_standby: str | None = None  # synchronous_standby_names as the node's settings file has it
    startable: bool = True  # a fault can make a crashed server refuse to start
    can_rewind: bool = True
    fresh: bool = False  # made by initdb and never started: it comes up as the primary of timeline 1
    was_primary: bool = False  # last ran as a primary: starting it without standby.signal keeps its timeline
    acked_wal: int = 0  # the furthest WAL acknowledged to clients while this server was a primary
    streaming_from: str | None = None  # the member it received WAL from at the last step
    replicas: frozenset[str] = field(default_factory=frozenset)
    cluster_parameters: tuple[tuple[str, Any], ...] = ()  # the cluster-wide settings its file holds
    cluster_pg_hba: tuple[str, ...] = ()
    cluster_use_slots: bool = True
    replication_slots: frozenset[str] = frozenset()  # kept on disk: a restart or a promotion keeps them

    @property
    def writable(self) -> bool:
        return self.running and not self.in_recovery and not self.read_only

    @property
    def data_dir(self) -> DataDir:
        if self.broken:
            return DataDir.BROKEN
        return DataDir.VALID if self.data else DataDir.EMPTY

    def stop(self) -> None:
        self.running = self.in_recovery = self.read_only = False
        self.streaming_from = None
        self.replicas = frozenset()

    def start(self, standby_of: str | None, primary: bool) -> bool:
        if self.data is None or self.broken or not self.startable:
            return False
        self.running, self.in_recovery, self.read_only, self.fresh = True, not primary, False, False
        self.was_primary = primary
        self.following = None if primary else standby_of
        return True

    def promote(self, new_segment: int) -> None:
        data = self.data
        assert data is not None
        data.history = (*data.history, TimelineSwitch(data.timeline, data.wal, "promote"))
        data.past = (*data.past, (data.segment, data.wal))
        data.timeline += 1
        data.segment = new_segment
        self.in_recovery = self.read_only = False
        self.was_primary = True
        self.following = self.streaming_from = None

    def observe(self) -> PostgresState:
        data = self.data
        wal = data.wal if data else 0
        standby = self.running and self.in_recovery
        primary = self.running and not self.in_recovery
        names = frozenset({self.sync_standby} - {None}) if self.running else frozenset()
        return PostgresState(
            data_dir=self.data_dir,
            system_identifier=data.sysid if data else None,
            running=self.running,
            in_recovery=self.in_recovery,
            read_only=self.read_only,
            timeline=data.timeline if data else 1,
            wal_written=0 if standby else wal,
            wal_received=wal if standby else 0,
            wal_replayed=wal if standby else 0,
            following=self.following if standby else None,
            streaming_replicas=self.replicas if primary else frozenset(),
            synchronous_standby_names=names,
            sync_replicas=self.replicas & names if primary else frozenset(),
            timeline_history=data.history if data else (),
            can_rewind=self.can_rewind,
            cluster_parameters=self.cluster_parameters,
            cluster_pg_hba=self.cluster_pg_hba,
            cluster_use_slots=self.cluster_use_slots,
            replication_slots=self.replication_slots if self.running else frozenset(),
        )


def accepts_stream(standby: Data, source: Data) -> bool:
    """Postgres's own check before streaming: judged by timeline numbers and the source's history file."""
    if standby.sysid != source.sysid:
        return False
    if standby.timeline == source.timeline:
        return True
    if standby.timeline > source.timeline:
        return False
    fork = next((h.switch_lsn for h in source.history if h.timeline == standby.timeline), None)
    return fork is not None and standby.wal <= fork


def same_lineage(standby: Data, source: Data) -> bool:
    """What really matters: the standby's WAL is a prefix of the source's (by segment, not timeline number)."""
    end = source.end_of(standby.segment)
    return end is not None and standby.wal <= end and all(source.end_of(seg) == e for seg, e in standby.past)
