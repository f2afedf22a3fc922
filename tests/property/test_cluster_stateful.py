"""Hypothesis drives the simulated cluster with every fault it knows; the world checks the invariants after each
of its events, and this machine asserts after each step that none broke. At the end everything heals and the
cluster must have a writable leader again within the liveness bound.

A failure prints as a program of steps; turn it into a `regression-*` scenario in model/scenarios.py.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fsm.observation import ClusterConfig
from model.faults import Fault, inject
from model.invariants import liveness_bound_s
from model.world import Settings, World

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


class ClusterMachine(RuleBasedStateMachine):
    world: World

    @initialize(seed=st.integers(0, 2**20), dcs=st.sampled_from(["etcd", "zookeeper"]), sync=st.booleans())
    def bootstrap(self, seed: int, dcs: str, sync: bool) -> None:
        config = ClusterConfig(synchronous_mode=sync)
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

    @rule(kind=st.sampled_from(MOMENTARY), node=NODES)
    def momentary_fault(self, kind: str, node: str) -> None:
        self._inject(kind, node)

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

    @rule(node=NODES, actions=st.integers(0, 5))
    def interrupt_agent(self, node: str, actions: int) -> None:
        """The agent dies after `actions` actions of its next decision and restarts at once."""
        self._inject("interrupt", node, value=actions)

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


# Each example simulates up to half an hour of a cluster: a third of the profile's examples keeps CI in minutes.
ClusterMachine.TestCase.settings = settings(
    max_examples=max(20, settings.default.max_examples // 3), stateful_step_count=25, deadline=None
)
test_cluster_keeps_its_invariants = ClusterMachine.TestCase
