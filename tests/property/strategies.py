"""Hypothesis strategies for observations of a small cluster (members n0, n1, n2; this node is n1).

Values are drawn near the thresholds the rules compare against (lease deadline, lag limit, timeline fork), so
that generated observations land on both sides of every guard.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from fsm.observation import (
    ActionOutcome,
    AgentState,
    ClusterConfig,
    ClusterView,
    DataDir,
    FailoverRequest,
    LeaderKey,
    Member,
    Observation,
    PostgresState,
    SyncState,
    Tags,
    TimelineSwitch,
    Trigger,
)
from fsm.states import State

ME = "n1"
NAMES = ("n0", "n1", "n2")
SYSIDS = ("7300000000000000001", "7300000000000000002")
MIB = 1_048_576
NOW = 1000.0

names = st.sampled_from(NAMES)
maybe_name = st.none() | names
wal = st.integers(min_value=0, max_value=8 * MIB)
timelines = st.integers(min_value=1, max_value=3)
tags = st.builds(Tags, nofailover=st.booleans(), nosync=st.booleans(), failover_priority=st.integers(0, 3))
configs = st.builds(
    ClusterConfig,
    maximum_lag_on_failover_bytes=st.sampled_from([0, MIB, 4 * MIB]),
    synchronous_mode=st.booleans(),
    pause=st.booleans(),
    use_slots=st.booleans(),
)
action_names = st.sampled_from(["RaceForInitialize", "StartPrimary", "RewindFromLeader", "RenewLeaderKey"])
outcomes = st.builds(
    ActionOutcome,
    succeeded=st.frozensets(action_names, max_size=2),
    failed=st.frozensets(action_names, max_size=2),
)


@st.composite
def members(draw: st.DrawFn) -> tuple[Member, ...]:
    chosen = draw(st.lists(names, unique=True, max_size=3))
    return tuple(
        Member(
            name,
            role=draw(st.sampled_from(["primary", "replica"])),
            state=draw(st.sampled_from(["running", "running", "stopped", "starting"])),
            wal_position=draw(wal),
            timeline=draw(timelines),
            tags=draw(tags),
        )
        for name in sorted(chosen)
    )


cluster_views = st.builds(
    ClusterView,
    leader=st.none() | st.builds(LeaderKey, holder=names, version=st.integers(0, 9)),
    members=members(),
    initialize=st.none() | st.just("") | st.sampled_from(SYSIDS),
    failover=st.none() | st.builds(FailoverRequest, leader=st.just("n0"), candidate=maybe_name),
    sync=st.none() | st.builds(SyncState, leader=maybe_name, sync_standby=maybe_name),
    leader_wal_position=st.none() | wal,
    history=st.lists(st.builds(TimelineSwitch, timeline=timelines, switch_lsn=wal), max_size=2).map(tuple),
)


@st.composite
def postgres_states(draw: st.DrawFn) -> PostgresState:
    data_dir = draw(st.sampled_from(list(DataDir)))
    running = data_dir is DataDir.VALID and draw(st.booleans())
    return PostgresState(
        data_dir=data_dir,
        system_identifier=draw(st.sampled_from(SYSIDS)) if data_dir is DataDir.VALID else None,
        running=running,
        in_recovery=running and draw(st.booleans()),
        read_only=draw(st.booleans()),
        timeline=draw(timelines),
        wal_written=draw(wal),
        wal_received=draw(wal),
        wal_replayed=draw(wal),
        following=draw(maybe_name),
        streaming_replicas=(streaming := draw(st.frozensets(names))),
        synchronous_standby_names=draw(st.frozensets(names, max_size=2)) if running else frozenset(),
        sync_replicas=draw(st.frozensets(names, max_size=1)) & streaming if running else frozenset(),
        can_rewind=draw(st.booleans()),
    )


agent_states = st.builds(
    AgentState,
    tags=tags,
    lease_renewed_at_s=st.none() | st.floats(min_value=NOW - 60, max_value=NOW),
    postgres_down_since_s=st.none() | st.floats(min_value=NOW - 60, max_value=NOW),
    last_outcome=outcomes,
)

any_observations = st.builds(
    Observation,
    name=st.just(ME),
    now_s=st.just(NOW),
    config=configs,
    dcs=st.none() | cluster_views,
    postgres=postgres_states(),
    agent=agent_states,
    trigger=st.sampled_from(list(Trigger)),
)

any_states = st.sampled_from(list(State))


@st.composite
def failover_observations(draw: st.DrawFn) -> Observation:
    """A healthy standby of a cluster whose leader key is gone or just won by this node: the moment a failover is
    decided. Only what the takeover guards compare (lag, sync key, tags, timeline) is drawn freely, so that the
    properties about who may take over are exercised on most examples instead of a few."""
    sysid = SYSIDS[0]
    timeline = draw(timelines)
    leader = draw(st.none() | st.builds(LeaderKey, holder=st.just(ME), version=st.integers(0, 9)))
    others = tuple(Member(name, wal_position=draw(wal), timeline=timeline, tags=draw(tags)) for name in ("n0", "n2"))
    me = Member(ME, wal_position=draw(wal), timeline=timeline)
    view = ClusterView(
        leader=leader,
        members=tuple(sorted((*others, me), key=lambda m: m.name)),
        initialize=sysid,
        sync=draw(st.none() | st.builds(SyncState, leader=st.sampled_from(["n0", ME]), sync_standby=maybe_name)),
        leader_wal_position=draw(st.none() | wal),
    )
    position = draw(wal)
    postgres = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=sysid,
        running=True,
        in_recovery=True,
        timeline=timeline,
        wal_received=position,
        wal_replayed=position,
        following=draw(maybe_name),
    )
    config = draw(
        st.builds(
            ClusterConfig,
            maximum_lag_on_failover_bytes=st.sampled_from([0, MIB, 4 * MIB]),
            synchronous_mode=st.booleans(),
        )
    )
    agent = AgentState(tags=draw(tags), lease_renewed_at_s=NOW if leader else None)
    return Observation(ME, NOW, config, view, postgres, agent)


@st.composite
def sync_leader_observations(draw: st.DrawFn) -> Observation:
    """This node leading a synchronous-mode cluster with a valid lease and a writable (or crashed) Postgres: the
    sync key, synchronous_standby_names, the streaming and the sync-state standbys are drawn freely, so that every
    way they can disagree (issue 18) is met on most examples."""
    others = ("n0", "n2")
    view = ClusterView(
        leader=LeaderKey(ME),
        members=tuple(Member(n, wal_position=draw(wal), tags=Tags(nosync=draw(st.booleans()))) for n in NAMES),
        initialize=SYSIDS[0],
        sync=draw(st.none() | st.builds(SyncState, leader=st.sampled_from(["n0", ME, ME]), sync_standby=maybe_name)),
    )
    running = draw(st.sampled_from([True, True, True, False]))
    streaming = draw(st.frozensets(st.sampled_from(others))) if running else frozenset()
    postgres = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=SYSIDS[0],
        running=running,
        in_recovery=running and draw(st.sampled_from([False, False, False, True])),
        wal_written=draw(wal),
        streaming_replicas=streaming,
        synchronous_standby_names=draw(st.frozensets(names, max_size=2)) if running else frozenset(),
        sync_replicas=draw(st.frozensets(st.sampled_from(others), max_size=1)) & streaming,
    )
    config = ClusterConfig(synchronous_mode=True)
    agent = AgentState(lease_renewed_at_s=NOW - draw(st.floats(0, 10)), postgres_down_since_s=None if running else NOW)
    return Observation(ME, NOW, config, view, postgres, agent)


# Every property draws from all: anything at all, and the rarer moments when a node may take over or leads in
# synchronous mode.
states = any_states | st.sampled_from([State.FOLLOWER, State.CANDIDATE])
observations = any_observations | failover_observations() | sync_leader_observations()
moments = st.tuples(states, observations)


sync_keys = st.builds(SyncState, leader=st.sampled_from(["n0", ME, ME]), sync_standby=maybe_name)


@st.composite
def takeover_moments(draw: st.DrawFn, sync: bool | None = None, won: bool | None = None) -> tuple[State, Observation]:
    """A follower that may race for a free leader key, or a candidate that just won it: this node (n1) is on the
    cluster's timeline, ahead of the others and allowed by its tags, so it takes over unless the lag or the sync
    key forbid it; those are drawn near their limits. `sync`: synchronous mode on, off, or drawn; `won`: a
    candidate holding the key, a follower, or drawn."""
    won = draw(st.booleans()) if won is None else won
    limit = draw(st.sampled_from([0, MIB, 4 * MIB]))
    position = draw(st.integers(2 * MIB, 8 * MIB))
    others = tuple(Member(name, wal_position=draw(st.integers(0, position))) for name in ("n0", "n2"))
    me = Member(ME, wal_position=position)
    lag = draw(st.sampled_from([0, 0, 0, limit, limit, limit + 1]))  # mostly takes over; at the limit's edge
    view = ClusterView(
        leader=LeaderKey(ME) if won else None,
        members=tuple(sorted((*others, me), key=lambda m: m.name)),
        initialize=SYSIDS[0],
        sync=draw(st.none() | sync_keys | sync_keys),
        leader_wal_position=draw(st.none() | st.just(position + lag)),
    )
    postgres = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=SYSIDS[0],
        running=True,
        in_recovery=True,
        wal_received=position,
        wal_replayed=position,
    )
    synchronous = draw(st.booleans()) if sync is None else sync
    config = ClusterConfig(maximum_lag_on_failover_bytes=limit, synchronous_mode=synchronous)
    agent = AgentState(lease_renewed_at_s=NOW if won else None)
    state = State.CANDIDATE if won else State.FOLLOWER
    return state, Observation(ME, NOW, config, view, postgres, agent)


@st.composite
def handover_moments(draw: st.DrawFn) -> tuple[State, Observation]:
    """A healthy leader asked to go: shutting down, a switchover to a fit member, or Postgres down for good."""
    members_ = tuple(Member(name, wal_position=5 * MIB) for name in NAMES)
    why = draw(st.sampled_from(["shutdown", "switchover", "crashed"]))
    view = ClusterView(
        leader=LeaderKey(ME),
        members=members_,
        initialize=SYSIDS[0],
        failover=FailoverRequest(ME, draw(st.sampled_from(["n0", "n2"]))) if why == "switchover" else None,
        leader_wal_position=5 * MIB,
    )
    running = why != "crashed"
    postgres = PostgresState(
        data_dir=DataDir.VALID,
        system_identifier=SYSIDS[0],
        running=running,
        wal_written=5 * MIB,
        streaming_replicas=frozenset({"n0", "n2"}) if running else frozenset(),
    )
    config = ClusterConfig(synchronous_mode=draw(st.booleans()))
    down_since = None if running else NOW - draw(st.floats(config.primary_start_timeout_s, 100))
    agent = AgentState(lease_renewed_at_s=NOW - draw(st.floats(0, 5)), postgres_down_since_s=down_since)
    trigger = Trigger.SHUTDOWN if why == "shutdown" else Trigger.TICK
    return State.LEADER, Observation(ME, NOW, config, view, postgres, agent, trigger)


def foreign(moment: tuple[State, Observation]) -> tuple[State, Observation]:
    """The same moment with a valid data directory of another cluster than the initialize key names."""
    state, observation = moment
    view = observation.dcs or ClusterView()
    postgres = replace(
        observation.postgres, data_dir=DataDir.VALID, system_identifier=SYSIDS[1], in_recovery=False, running=False
    )
    return state, replace(observation, dcs=replace(view, initialize=SYSIDS[0]), postgres=postgres)


def writable(observation: Observation) -> Observation:
    """The same observation with the local Postgres running as a writable primary of the cluster's data."""
    postgres = replace(
        observation.postgres,
        data_dir=DataDir.VALID,
        system_identifier=observation.postgres.system_identifier or SYSIDS[0],
        running=True,
        in_recovery=False,
        read_only=False,
    )
    return replace(observation, postgres=postgres)
