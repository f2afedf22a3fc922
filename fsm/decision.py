"""decide(): one observation in, one decision out. Pure: same input, same output, nothing touched."""

from __future__ import annotations

from dataclasses import dataclass

from fsm.actions import ACTION_TYPES, Action, PublishMember
from fsm.facts import derive_facts
from fsm.observation import InvalidObservation, Observation
from fsm.states import State
from fsm.transitions import fire


@dataclass(frozen=True)
class Decision:
    """What to do: the next state, the actions in order (the driver stops at the first that fails), the name
    of the rule that fired, and why: the notes of that rule's guards, with the values behind them.

    Time passes between a decision and its last action. So the driver checks each action's preconditions right
    before it runs (`fsm.node.blocked`: StartPrimary and Promote need a lease still valid) and reports it failed
    if they no longer hold."""

    state: State
    actions: tuple[Action, ...]
    rule: str
    why: str
    final: bool = False  # the agent ends once these actions have run

    def log_line(self, previous: State) -> str:
        return f"{previous.value} -> {self.state.value} [{self.rule}] {self.why}"


def decide(state: State, observation: Observation) -> Decision:
    """Apply the rule table to `observation` for a node in `state`."""
    if not isinstance(state, State):
        raise InvalidObservation(f"unknown state {state!r}")
    if not isinstance(observation, Observation):
        raise InvalidObservation(f"not an Observation: {type(observation).__name__}")
    outcome = observation.agent.last_outcome
    unknown = (outcome.succeeded | outcome.failed) - ACTION_TYPES.keys()
    if unknown:
        raise InvalidObservation(f"unknown action names in last_outcome: {sorted(unknown)}")

    facts = derive_facts(observation)
    next_state, rule = fire(state, observation.trigger.value, facts)
    actions = tuple(a for a in (act.build(facts) for act in rule.actions) if a is not None)
    if facts.truth["dcs_reachable"]:
        role = "primary" if next_state is State.LEADER else "replica"
        actions += (PublishMember(state=next_state, role=role, paused=facts.truth["paused"]),)
    # The guards, what a fallback row reports, and the facts behind each conditional action that was emitted.
    emitted_because = [a.when for a in rule.actions if a.when is not None and facts.truth[a.when]]
    why = "; ".join(facts.explain(name) for name in (*rule.reported, *emitted_because)) or "unconditional"
    return Decision(next_state, actions, rule.name, why, rule.final)
