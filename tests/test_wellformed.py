"""The rule table is well formed: every state reachable and left, every block total, no duplicate or dead rows,
every name it uses defined, every action documented, and `transitions` configured as the core relies on."""

from __future__ import annotations

import pytest
from transitions import MachineError

from fsm import actions
from fsm.actions import ACTION_TYPES, Action, Demote, DemoteMode, Promote, PublishMember, RunCallback
from fsm.facts import FACT_DOCS, derive_facts
from fsm.observation import Trigger
from fsm.states import State, describe
from fsm.transitions import MACHINE, RULES, Act, Rule, _Situation, act, build_machine, fire, rule
from tests.test_rules import CASES
from tests.worlds import leader_view, observe


def destinations(state: State) -> set[State]:
    return {r.dest or state for r in RULES if state in r.source}


def test_every_state_is_reachable_from_bootstrap():
    seen, frontier = {State.BOOTSTRAP}, [State.BOOTSTRAP]
    while frontier:
        for nxt in destinations(frontier.pop()) - seen:
            seen.add(nxt)
            frontier.append(nxt)
    assert seen == set(State)


@pytest.mark.parametrize("state", list(State))
def test_every_state_has_an_exit(state):
    assert destinations(state) - {state}, f"{state.value} can never be left"


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_block_ends_unguarded_and_has_no_dead_rows(state, trigger):
    block = [r for r in RULES if state in r.source and r.trigger is trigger]
    assert block, f"no rule for {trigger.value} in {state.value}"
    unguarded = [i for i, r in enumerate(block) if not r.guards]
    assert unguarded == [len(block) - 1], f"{state.value}/{trigger.value} must end with exactly one unguarded row"


def test_no_two_rows_share_source_trigger_and_guards():
    keys = [(s, r.trigger, frozenset(r.when), frozenset(r.unless)) for r in RULES for s in r.source]
    assert len(keys) == len(set(keys))


def test_rule_names_are_unique():
    assert len({r.name for r in RULES}) == len(RULES)


def test_guards_and_conditional_actions_name_defined_facts():
    used = {g for r in RULES for g in r.reported} | {a.when for r in RULES for a in r.actions if a.when}
    assert used <= FACT_DOCS.keys(), used - FACT_DOCS.keys()


def test_every_fact_is_used_by_the_table():
    used = {g for r in RULES for g in r.reported} | {a.when for r in RULES for a in r.actions if a.when}
    assert FACT_DOCS.keys() <= used, FACT_DOCS.keys() - used


def test_derived_facts_are_exactly_the_documented_ones():
    for observation in (observe(), leader_view(), observe(dcs=None)):
        facts = derive_facts(observation)
        assert facts.truth.keys() == FACT_DOCS.keys() == facts.notes.keys()


def test_every_action_type_is_documented_with_its_adapter():
    concrete = [kind for kind in ACTION_TYPES.values() if kind.adapter]
    assert len(concrete) == len(ACTION_TYPES)
    for kind in concrete:
        assert kind.adapter in {"dcs", "postgres", "watchdog", "callback", "peers", "api"}
        assert kind.__doc__ and len(kind.__doc__.split()) >= 8, f"{kind.__name__} needs a docstring"


def test_every_action_type_is_emitted_by_some_rule():
    emitted = {a.kind for r in RULES for a in r.actions} | {PublishMember}
    assert set(ACTION_TYPES.values()) == emitted


@pytest.mark.parametrize("state", list(State))
def test_every_state_is_described(state):
    assert "Holds:" in describe(state)


def test_no_auto_transitions_bypass_the_guards():
    assert not any(name.startswith("to_") for name in MACHINE.events)


def test_an_unknown_trigger_raises_and_leaves_the_state_unchanged():
    facts = derive_facts(observe())
    with pytest.raises(MachineError):
        fire(State.FOLLOWER, "promote_now", facts)
    situation = _Situation(State.FOLLOWER, facts)
    MACHINE.add_transition("only_from_leader", source=State.LEADER, dest=State.DEMOTING)
    try:
        with pytest.raises(MachineError):
            MACHINE.events["only_from_leader"].trigger(situation)
        assert situation.state is State.FOLLOWER
    finally:
        del MACHINE.events["only_from_leader"]


def test_first_matching_row_wins():
    # A leader whose lease expired while the DCS is down matches lead_lease_expired, lead_dcs_down and more;
    # the earliest row in the table decides.
    _, rule = fire(State.LEADER, "tick", derive_facts(leader_view(dcs=None, agent=observe().agent)))
    assert rule.name == "lead_lease_expired"


def test_fact_names_do_not_shadow_the_models_own_attributes():
    assert not FACT_DOCS.keys() & {"state", "fired", "record"}


# The table is built once, at import. These build rows and machines now, so that a change to the builders shows.


def test_a_row_reads_as_written():
    row = rule("r", Trigger.TICK, State.LEADER, None, Promote, act(Demote, "paused", mode=DemoteMode.GRACEFUL),
               when="lease_valid writable", unless="paused", also="eligible first_in_line", reason="why")  # fmt: skip
    assert row == Rule(
        name="r",
        trigger=Trigger.TICK,
        source=(State.LEADER,),
        dest=None,
        reason="why",
        when=("lease_valid", "writable"),
        unless=("paused",),
        actions=(Act(Promote), Act(Demote, "paused", (("mode", DemoteMode.GRACEFUL),))),
        also=("eligible", "first_in_line"),
        final=False,
    )
    bare = rule("s", Trigger.SHUTDOWN, (State.LEADER, State.FOLLOWER), State.DEMOTING, final=True, reason="bye")
    assert bare == Rule("s", Trigger.SHUTDOWN, (State.LEADER, State.FOLLOWER), State.DEMOTING, "bye", final=True)
    assert (bare.when, bare.unless, bare.actions, bare.also, bare.reported) == ((), (), (), (), ())


def test_an_act_fixes_its_arguments_in_name_order_and_plans_with_them():
    callback = act(RunCallback, role="replica", event="on_stop")
    assert callback == Act(RunCallback, None, (("event", "on_stop"), ("role", "replica")))
    assert str(callback) == "RunCallback(event=on_stop, role=replica)"
    assert callback.build(derive_facts(observe())) == RunCallback(event="on_stop", role="replica")
    conditional = act(Demote, "paused", mode=DemoteMode.IMMEDIATE)
    assert str(conditional) == "Demote(mode=immediate) if paused"
    assert conditional.build(derive_facts(observe())) is None


def test_a_machine_built_now_decides_every_case_as_the_table_says():
    machine = build_machine()
    assert machine.models == []  # no model: the shared machine holds no node's state between decisions
    assert set(machine.events) == {trigger.value for trigger in Trigger}  # and no auto transitions
    for name, state, observation, dest, _ in CASES:
        next_state, row = fire(state, observation.trigger.value, derive_facts(observation), machine)
        assert (row.name, next_state) == (name, dest)


def test_a_trigger_a_state_has_no_row_for_raises():
    machine = build_machine((rule("only_leader", Trigger.TICK, State.LEADER, None, reason="x"),))
    facts = derive_facts(observe())
    assert fire(State.LEADER, "tick", facts, machine)[1].name == "only_leader"
    with pytest.raises(MachineError):
        fire(State.FOLLOWER, "tick", facts, machine)
    with pytest.raises(MachineError) as raised:
        fire(State.FOLLOWER, "promote_now", facts, machine)
    assert raised.value.value == "unknown trigger 'promote_now'"


def test_a_block_without_an_unguarded_row_is_an_error_not_a_silent_stay():
    machine = build_machine((rule("guarded", Trigger.TICK, State.FOLLOWER, None, when="paused", reason="x"),))
    with pytest.raises(RuntimeError) as raised:
        fire(State.FOLLOWER, "tick", derive_facts(observe()), machine)
    assert str(raised.value) == "no rule matched tick in follower: the table must end each block unguarded"


def test_an_action_type_registers_under_its_class_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(actions, "ACTION_TYPES", {})

    class Probe(Action):
        pass

    registry = actions.ACTION_TYPES
    assert registry == {"Probe": Probe}
