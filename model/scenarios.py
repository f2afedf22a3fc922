"""Named failure scenarios: a fault schedule (and any settings it needs) for `python -m model.simulate`.

Every scenario lets the cluster bootstrap, injects its faults from t=60 s, and heals everything at half the
duration; the liveness check then requires a writable leader within the bound of `model.invariants`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.faults import Fault

FIRST_FAULT_S = 60.0


def heal_at(duration_s: float) -> float:
    return duration_s / 2


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    schedule: Callable[[float, float, random.Random], list[Fault]]  # (duration, ttl, rng) -> faults
    config: dict[str, Any] = field(default_factory=dict)  # ClusterConfig fields it needs
    watchdog: bool | None = None  # None: as the command line says
    dcs_kind: str | None = None  # None: as the command line says
    seed: int = 1  # the seed it runs with unless told otherwise (regressions replay the seed that found them)
    failsafe_unaware: str | None = None  # a node whose agent predates failsafe mode (`Settings.failsafe_unaware`)


def _then_heal(*faults: Fault) -> Callable[[float, float, random.Random], list[Fault]]:
    return lambda duration, ttl, rng: [*faults, Fault(heal_at(duration), "heal", "all")]


def _pause(duration: float, ttl: float, rng: random.Random) -> list[Fault]:
    return [Fault(FIRST_FAULT_S, "pause", "leader", duration_s=3 * ttl), Fault(heal_at(duration), "heal", "all")]


def _rejoin(duration: float, ttl: float, rng: random.Random) -> list[Fault]:
    return [
        Fault(FIRST_FAULT_S, "crash", "leader"),
        Fault(FIRST_FAULT_S + 90, "restart", "last"),
        Fault(heal_at(duration), "heal", "all"),
    ]


def _flapping(duration: float, ttl: float, rng: random.Random) -> list[Fault]:
    flaps = [Fault(FIRST_FAULT_S + 20 * i, "partition_dcs", "leader", duration_s=10.0) for i in range(6)]
    return [*flaps, Fault(heal_at(duration), "heal", "all")]


RANDOM_KINDS = (
    "crash",
    "postgres_crash",
    "postgres_broken",
    "pause",
    "partition_dcs",
    "partition_peers",
    "partition",
    "dcs_down",
    "lag_spike",
    "drift",
    "switchover",
    "shutdown",
)


def _random(duration: float, ttl: float, rng: random.Random) -> list[Fault]:
    end = heal_at(duration) - 30
    faults = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(RANDOM_KINDS)
        target = rng.choice(["leader", "leader", "replica"])
        lasting = rng.uniform(5, 2 * ttl) if kind in ("pause", "partition_dcs", "partition", "dcs_down") else None
        value = rng.uniform(-0.01, 0.01) if kind == "drift" else rng.randint(0, 4) if kind == "interrupt" else 0.0
        faults.append(Fault(round(rng.uniform(30, end), 3), kind, target, lasting, value))
    return [*sorted(faults, key=lambda f: f.at_s), Fault(heal_at(duration), "heal", "all")]


def _fixed(*faults: tuple[Any, ...]) -> Callable[[float, float, random.Random], list[Fault]]:
    """Faults as (at_s, kind, target, duration_s[, value]) tuples."""
    return lambda duration, ttl, rng: [Fault(*fault) for fault in faults]


# Fault schedules (and seeds) with which random campaigns broke an invariant, kept so the fix stays fixed.
REGRESSIONS = (
    Scenario(
        "regression-diverged-without-leader",
        "a node with WAL past its timeline's end in the cluster history was eligible while nobody led",
        _fixed(
            (50.249, "partition", "leader", 56.345),
            (89.147, "dcs_down", "all", 29.015),
            (179.299, "shutdown", "leader", None),
            (213.331, "partition_dcs", "leader", 59.472),
            (300.0, "heal", "all", None),
        ),
        seed=38,
    ),
    Scenario(
        "regression-shutdown-mid-decision",
        "a shutdown during a decision's actions left the agent gone and Postgres writable",
        _fixed(
            (46.705, "postgres_crash", "leader", None),
            (52.288, "shutdown", "leader", None),
            (102.621, "postgres_crash", "leader", None),
            (193.792, "partition", "leader", 57.296),
            (199.963, "dcs_down", "all", 8.145),
            (233.831, "postgres_broken", "leader", None),
            (300.0, "heal", "all", None),
        ),
        seed=167,
    ),
    Scenario(
        "regression-promote-after-pause",
        "a promote delayed by a frozen agent revived the server the watchdog had killed",
        _fixed(
            (35.266, "dcs_down", "all", 41.954),
            (58.801, "partition", "leader", 32.727),
            (92.08, "pause", "leader", 46.467),
            (121.418, "postgres_broken", "replica", None),
            (163.095, "crash", "replica", None),
            (236.978, "dcs_down", "all", 32.662),
            (300.0, "heal", "all", None),
        ),
        seed=5214,
    ),
    Scenario(
        "regression-duplicate-timeline",
        "a node behind the cluster's newest timeline was promoted into a second timeline of the same number",
        _fixed(
            (193.26, "postgres_broken", "leader", None),
            (201.001, "partition_dcs", "replica", 26.512),
            (206.337, "postgres_broken", "leader", None),
            (300.0, "heal", "all", None),
        ),
        seed=5302,
    ),
    Scenario(
        "regression-sync-leader-without-standby",
        "a standby took over from a synchronous-mode leader that ran without a sync standby, losing its commits",
        _fixed(
            (87.0, "interrupt", "n1", None, 3),
            (87.0, "crash", "n0", None),
            (103.0, "pause", "n2", 19.0),
            (123.0, "heal", "all", None),
        ),
        config={"synchronous_mode": True},
        seed=0,
    ),
    Scenario(
        "regression-heal-while-frozen",
        "the only sync-allowed standby stayed frozen after the heal; the sync key's own leader must take over",
        _fixed(
            (61.0, "interrupt", "n0", None, 0),
            (62.0, "pause", "n1", 19.0),
            (62.0, "pause", "n0", 70.0),
            (62.0, "heal", "all", None),
        ),
        config={"synchronous_mode": True},
        seed=0,
    ),
    Scenario(
        "regression-shutdown-after-heal",
        "the two sync-allowed nodes finished shutting down just after the heal: a fault, not a broken promise",
        _fixed(
            (60.0, "shutdown", "n0", None),
            (60.0, "shutdown", "n1", None),
            (60.0, "heal", "all", None),
        ),
        config={"synchronous_mode": True},
        seed=0,
    ),
)

SYNC = {"synchronous_mode": True}

# Seeds of `--scenario random --sync` that lost acknowledged commits (issue 18): the leader ran with a
# synchronous_standby_names that did not name the sync key's standby, or with no sync key at all.
SYNC_RANDOM_SEEDS = (51, 99, 255, 433, 446, 479, 559, 563, 633, 647, 730, 854, 912, 920, 946)

SYNC_REGRESSIONS = (
    Scenario(
        "regression-sync-outage-same-leader",
        "synchronous mode: a DCS outage sends the leader read-only (synchronous_standby_names gone), the same node "
        "leads again, then dies: the key's standby, promoted, must hold every commit it acknowledged",
        _fixed((60.0, "dcs_down", "all", 15.0), (95.0, "crash", "leader", None), (300.0, "heal", "all", None)),
        config=SYNC,
    ),
    Scenario(
        "regression-sync-standby-replaced",
        "synchronous mode: replication moved to a new standby while the key still named the old one",
        _fixed(
            (50.0, "lag_spike", "n1", 15.0),
            (55.0, "partition_peers", "n0", 1000.0),
            (65.5, "crash", "n2", None),
            (300.0, "heal", "all", None),
        ),
        config=SYNC,
    ),
    *(
        Scenario(
            f"regression-sync-random-{seed}",
            f"synchronous mode, random faults of seed {seed}: acknowledged commits the sync key's standby lacked",
            _random,
            config=SYNC,
            seed=seed,
        )
        for seed in SYNC_RANDOM_SEEDS
    ),
    Scenario(
        "regression-sync-named-after-outage",
        "synchronous mode at the held-out run's timings (ttl 10, loop_wait 2, retry_timeout 2): whole-DCS "
        "outages of 12 s, the second while the cluster is still rejoining from the first; once a standby streams "
        "again the leader names a synchronous standby within three loops (invariant 8, sync_named; the held-out run "
        "saw none named 180 s after the DCS returned)",
        _fixed(
            (60.0, "dcs_down", "all", 12.0),
            (73.5, "dcs_down", "all", 12.0),
            (120.0, "dcs_down", "all", 12.0),
            (300.0, "heal", "all", None),
        ),
        config={**SYNC, "ttl_s": 10.0, "loop_wait_s": 2.0, "retry_timeout_s": 2.0, "safety_margin_s": 1.0},
    ),
    Scenario(
        "regression-sync-unacknowledged-tail",
        "synchronous mode on ZooKeeper: WAL still waiting for the sync standby when the leader went read-only is "
        "not an acknowledged commit when the same node is promoted again (the model counted it as one)",
        _random,
        config=SYNC,
        seed=900,
        dcs_kind="zookeeper",
    ),
)

# failsafe_mode (Patroni's): a leader the DCS does not answer leads on while every member of the failsafe key
# accepts its POST /failsafe; a member that accepted keeps out of a leader race for ttl. Each scenario: its faults
# (then heal), and what it shows.
FAILSAFE_FAULTS = {
    "failsafe-dcs-outage": [Fault(FIRST_FAULT_S, "dcs_down", "all", duration_s=60.0)],
    "failsafe-leader-partition": [Fault(FIRST_FAULT_S, "partition", "leader")],
    "failsafe-leader-dcs-partition": [Fault(FIRST_FAULT_S, "partition_dcs", "leader", duration_s=90.0)],
    "failsafe-unsafe-member": [Fault(FIRST_FAULT_S, "partition_dcs", "leader")],
    "failsafe-replica-restart": [
        Fault(FIRST_FAULT_S, "partition_dcs", "leader"),
        Fault(80.0, "agent_restart", "replica"),
    ],
    "failsafe-switchover-to-unlisted": [Fault(60.0, "pause", "n0", 32.0), Fault(92.0, "scheduled_switchover", "n0")],
}
FAILSAFE_SUMMARIES = {
    "failsafe-dcs-outage": "the whole DCS is down for 60 s: the leader keeps taking writes on its members' word, "
    "nobody else is promoted, and it takes the lapsed leader key again when the DCS is back",
    "failsafe-leader-partition": "the leader is cut off from the DCS and its peers: no member answers its POST "
    "/failsafe, it goes read-only within ttl and a replica takes over once the key has expired",
    "failsafe-leader-dcs-partition": "the leader is cut off from the DCS only, for 90 s: its members accept its POST "
    "/failsafe and stay out of the race for the lapsed key; the leader takes the key again when its link is back",
    "failsafe-unsafe-member": "n1 runs an agent older than it (left out of the failsafe key, it races as ever); the "
    "leader, cut off from the DCS only, leads on while n1 takes the lapsed key: split brain",
    "failsafe-replica-restart": "the leader is cut off from the DCS only, then a replica's agent restarts: the new "
    "process knows nothing of the POST /failsafe the old one accepted, races for the lapsed key and wins it while "
    "the leader still writes on its members' word: split brain (a known gap of the rows, not yet closed)",
    "failsafe-switchover-to-unlisted": "n0's agent freezes past ttl, so the leader rewrites the failsafe key without "
    "it; a switchover to n0 comes before the key lists it again: n0 may not race, the others wait for n0: no leader, "
    "ever (a known gap of the rows, found by the stateful test)",
}
FAILSAFE_OPTIONS: dict[str, dict[str, Any]] = {
    "failsafe-unsafe-member": {"failsafe_unaware": "n1"},
    "failsafe-switchover-to-unlisted": {"seed": 0},
}
FAILSAFE_SCENARIOS = tuple(
    Scenario(
        name,
        f"failsafe mode; {FAILSAFE_SUMMARIES[name]}",
        _then_heal(*faults),
        config={"failsafe_mode": True},
        **FAILSAFE_OPTIONS.get(name, {}),
    )
    for name, faults in FAILSAFE_FAULTS.items()
)

SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "leader-crash",
            "the leader's host dies; a replica takes over; the old one rejoins at heal",
            _then_heal(Fault(FIRST_FAULT_S, "crash", "leader")),
        ),
        Scenario(
            "leader-postgres-crash",
            "Postgres on the leader dies and will not start: one restart, then hand over",
            _then_heal(Fault(FIRST_FAULT_S, "postgres_broken", "leader")),
        ),
        Scenario(
            "leader-partition",
            "the leader is cut off from the DCS and its peers: read-only, then replaced",
            _then_heal(Fault(FIRST_FAULT_S, "partition", "leader")),
        ),
        Scenario(
            "dcs-outage",
            "the whole DCS is down for 60 s: the leader goes read-only within ttl",
            _then_heal(Fault(FIRST_FAULT_S, "dcs_down", "all", duration_s=60.0)),
        ),
        Scenario(
            "lagging-replica",
            "every replica lags beyond maximum_lag_on_failover, then the leader dies: "
            "nobody is promoted until the old leader returns",
            _then_heal(Fault(20.0, "lag_spike", "all"), Fault(FIRST_FAULT_S, "crash", "leader")),
        ),
        Scenario(
            "switchover",
            "an operator asks the leader to hand over to a replica",
            _then_heal(Fault(FIRST_FAULT_S, "switchover", "replica")),
        ),
        Scenario(
            "sync-failover",
            "synchronous mode; the leader dies; only the sync standby may take over, "
            "and no acknowledged commit is lost",
            _then_heal(Fault(FIRST_FAULT_S, "crash", "leader")),
            config={"synchronous_mode": True},
        ),
        Scenario(
            "agent-pause",
            "the leader's agent freezes for 3 x ttl with no watchdog: split brain",
            _pause,
            watchdog=False,
        ),
        Scenario(
            "agent-pause-watchdog",
            "the leader's agent freezes for 3 x ttl; the watchdog fences Postgres",
            _pause,
            watchdog=True,
        ),
        Scenario("rejoin-after-failover", "the leader dies and comes back 90 s later: it rewinds and follows", _rejoin),
        Scenario("flapping-network", "the leader's link to the DCS drops for 10 s every 20 s, six times", _flapping),
        Scenario("random", "two to six faults drawn from the seed, then heal", _random),
        Scenario(
            "operator-restarts",
            "an operator restarts the leader's Postgres, then a replica's, then re-clones the replica: the leader "
            "keeps its key throughout",
            _then_heal(
                Fault(FIRST_FAULT_S, "restart_request", "leader"),
                Fault(FIRST_FAULT_S + 30, "restart_request", "replica"),
                Fault(FIRST_FAULT_S + 60, "reinit_request", "last"),
            ),
        ),
        *FAILSAFE_SCENARIOS,
        *REGRESSIONS,
        *SYNC_REGRESSIONS,
    )
}
