"""Hypothesis drives the simulated cluster with every fault it knows; the world checks the invariants after each
of its events, and this machine asserts after each step that none broke. At the end everything heals and the
cluster must have a writable leader again within the liveness bound.

A failure prints as a program of steps; turn it into a `regression-*` scenario in model/scenarios.py.

The failsafe machine runs the same with failsafe_mode on, so that DCS outages, partitions and pauses meet a leader
that leads on through them on its members' word. It leaves out the faults that end an agent process (a crash, a
shutdown, an interrupt, and so the restart of either): the new process knows nothing of the POST /failsafe the old
one accepted and may race while the leader still writes on its word, a known gap of the rows (the scenario
failsafe-replica-restart replays it). Longer hunts (REGENT_HYPOTHESIS_PROFILE=thorough) also meet the other known
gap, a switchover to a member the failsafe key does not list (the scenario failsafe-switchover-to-unlisted).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fsm.observation import ClusterConfig
from model.faults import Fault, inject
from model.invariants import liveness_bound_s
from model.world import Settings, World
from tests.property.conditions import met

NODES = st.sampled_from(["n0", "n1", "n2", "leader", "replica"])
LASTING = ("pause", "partition_dcs", "partition_peers", "partition", "dcs_down")
MOMENTARY = (
    "crash",
    "restart",
    "postgres_crash",
    "postgres_broken",
    "lag_spike",
    "switchover",
    "shutdown",
    "restart_request",
    "reinit_request",
)


ENDS_AGENT = ("crash", "restart", "shutdown")  # faults that end an agent process (or start a new one)
FAILSAFE_MOMENTARY = tuple(kind for kind in MOMENTARY if kind not in ENDS_AGENT)


class _Cluster(RuleBasedStateMachine):
    """The rules both machines share: time passing, lasting faults, clocks, operator requests, heal."""

    world: World
    failsafe = False

    @initialize(seed=st.integers(0, 2**20), dcs=st.sampled_from(["etcd", "zookeeper"]), sync=st.booleans())
    def bootstrap(self, seed: int, dcs: str, sync: bool) -> None:
        config = ClusterConfig(synchronous_mode=sync, failsafe_mode=self.failsafe)
        self.world = World(Settings(duration_s=10**9, dcs_kind=dcs, config=config), seed)
        self.world.run(60.0)

    def _inject(self, kind: str, target: str, duration_s: float | None = None, value: float = 0.0) -> None:
        inject(self.world, Fault(self.world.t, kind, target, duration_s, value))

    @rule(seconds=st.floats(0.001, 60.0))
    def advance_time(self, seconds: float) -> None:
        self.world.run(self.world.t + seconds)

    @rule(kind=st.sampled_from(LASTING), node=NODES, duration=st.floats(1.0, 120.0))
    def lasting_fault(self, kind: str, node: str, duration: float) -> None:
        self._inject(kind, "all" if kind == "dcs_down" else node, duration)

    @rule(node=NODES, rate=st.floats(-0.01, 0.01))
    def drift_clock(self, node: str, rate: float) -> None:
        self._inject("drift", node, value=rate)

    @rule(
        kind=st.sampled_from(["scheduled_restart", "scheduled_switchover", "cancel_restart"]),
        node=NODES,
        ahead=st.floats(0.0, 60.0),
    )
    def scheduled_request(self, kind: str, node: str, ahead: float) -> None:
        """An operator schedules a restart of the node, or a switchover to it, `ahead` seconds from now (or
        deletes the node's scheduled restart)."""
        self._inject(kind, node, value=ahead)

    @rule()
    def heal(self) -> None:
        self._inject("heal", "all")

    @invariant()
    def invariants_hold(self) -> None:
        if hasattr(self, "world"):
            assert not self.world.trace.violations, "\n".join(self.world.trace.lines[-40:])

    def teardown(self) -> None:
        if not hasattr(self, "world"):
            return
        self._inject("heal", "all")
        thawed = max([self.world.t, *(node.paused_until for node in self.world.nodes.values())])
        self.world.run(thawed + liveness_bound_s(self.world) + 1)
        assert not self.world.trace.violations, "\n".join(self.world.trace.lines[-40:])


class ClusterMachine(_Cluster):
    @rule(kind=st.sampled_from(MOMENTARY), node=NODES)
    def momentary_fault(self, kind: str, node: str) -> None:
        self._inject(kind, node)

    @rule(node=NODES, actions=st.integers(0, 5))
    def interrupt_agent(self, node: str, actions: int) -> None:
        """The agent dies after `actions` actions of its next decision and restarts at once."""
        self._inject("interrupt", node, value=actions)


class FailsafeClusterMachine(_Cluster):
    """failsafe_mode on; every agent process lives as long as the machine (see the module's docstring)."""

    failsafe = True

    @rule(kind=st.sampled_from(FAILSAFE_MOMENTARY), node=NODES)
    def momentary_fault(self, kind: str, node: str) -> None:
        self._inject(kind, node)

    @rule(seconds=st.floats(30.0, 90.0), through=st.booleans())
    def leader_cut_off_from_the_dcs(self, seconds: float, through: bool) -> None:
        """What failsafe mode is for: the leader alone loses the DCS, for longer than ttl or nearly (and the
        cluster runs through it, or the next rules strike meanwhile)."""
        self._inject("partition_dcs", "leader", seconds)
        if through:
            self.world.run(self.world.t + seconds)

    @invariant()
    def a_leader_leads_on_its_members_word(self) -> None:
        """Counted, not asserted: the examples must often meet a leader that kept its lease by its members' word."""
        if hasattr(self, "world"):
            words = dict(self.world.failsafe_word)
            met("a step in which a leader led on its members' word (failsafe)", words != getattr(self, "_words", {}))
            self._words = words


# Each example simulates up to half an hour of a cluster: a third of the profile's examples keeps CI in minutes.
CLUSTER_SETTINGS = settings(
    max_examples=max(20, settings.default.max_examples // 3), stateful_step_count=25, deadline=None
)
ClusterMachine.TestCase.settings = CLUSTER_SETTINGS
test_cluster_keeps_its_invariants = ClusterMachine.TestCase
# Its examples are cheaper (no agent restarts, no re-clones after a crash): as many as the profile says.
FailsafeClusterMachine.TestCase.settings = settings(CLUSTER_SETTINGS, max_examples=settings.default.max_examples)
test_cluster_in_failsafe_mode_keeps_its_invariants = FailsafeClusterMachine.TestCase
