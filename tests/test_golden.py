"""The rule table's golden dump and the generated docs must match the table in fsm/transitions.py; the facts,
notes and decisions of every rule case (tests/test_rules.py) must match their golden dump.

After an intended change to the table, a fact or a note: REGENT_REWRITE_GOLDEN=1 pytest tests/test_golden.py, then
python -m model.diagram, and review the diffs."""

from __future__ import annotations

import os
from pathlib import Path

from fsm import Decision, Observation, State, decide
from fsm.facts import FACT_DOCS, derive_facts
from fsm.observation import FailoverRequest, OperatorRequest, RequestKind, SyncState, Tags, TimelineSwitch
from model import diagram
from tests import test_decide
from tests.test_rules import CASES, ahead
from tests.worlds import (
    CONFIG,
    NOW,
    agent,
    cluster,
    evolve,
    forked_history,
    leader_view,
    members,
    observe,
    primary,
    standby,
    stopped,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "rule_table.txt"
FACTS_GOLDEN = GOLDEN.with_name("facts.txt")


def test_rule_table_matches_golden_dump():
    dump = diagram.dump_rules()
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        GOLDEN.write_text(dump)
    assert dump == GOLDEN.read_text(), "the rule table changed: review it and rewrite the golden file"


def _extra() -> list[tuple[str, State, Observation]]:
    """Situations at the edges no rule case or behaviour test names: boundaries, requests, sync and history."""
    sync = evolve(CONFIG, synchronous_mode=True)
    lease = CONFIG.ttl_s - CONFIG.safety_margin_s  # renewed this long ago: the lease deadline is now
    outlast = lease - 2 * CONFIG.retry_timeout_s  # renewed this long ago: now + 2 x retry_timeout is the deadline
    n2_ahead_tl2 = evolve(
        cluster(None, history=forked_history(end_of_tl1=4_000_000)),
        members=tuple(evolve(m, wal_position=9_000_000, timeline=2) if m.name == "n2" else m for m in members(None)),
    )
    n2_ahead_old_tl = evolve(
        cluster(None, history=(TimelineSwitch(1, 1_000), TimelineSwitch(2, 2_000))),
        members=tuple(evolve(m, wal_position=9_000_000, timeline=2) if m.name == "n2" else m for m in members(None)),
    )
    unfit = tuple(evolve(m, tags=Tags(nofailover=True)) if m.name != "n0" else m for m in members())
    return [
        ("lease ends now", State.LEADER, leader_view(agent=agent(lease))),
        ("lease outlasts retry exactly", State.LEADER, leader_view(dcs=None, agent=agent(outlast))),
        ("slots off", State.LEADER, leader_view(config=evolve(CONFIG, use_slots=False))),
        ("restart of the primary", State.LEADER, leader_view(agent=agent(10, request=OperatorRequest(
            RequestKind.RESTART, role="primary", restart_pending=True)), postgres=primary(pending_restart=True))),
        ("restart with nothing pending", State.FOLLOWER, observe(agent=agent(request=OperatorRequest(
            RequestKind.RESTART, restart_pending=True)))),
        ("reinit without a running leader", State.FOLLOWER, observe(dcs=cluster(members=tuple(
            evolve(m, state="stopped") if m.name == "n0" else m for m in members())),
            agent=agent(request=OperatorRequest(RequestKind.REINITIALIZE)))),
        ("timeline ahead of the leader", State.FOLLOWER, observe(pg=standby(timeline=3))),
        ("timeline ahead, no leader", State.FOLLOWER, observe(dcs=cluster(None), pg=standby(timeline=3))),
        ("down exactly primary_start_timeout", State.LEADER, leader_view(postgres=stopped(), agent=agent(
            10, postgres_down_since_s=NOW - CONFIG.primary_start_timeout_s))),
        ("sync mode, no sync key", State.FOLLOWER, observe(dcs=cluster(None), config=sync)),
        ("a diverged member ahead", State.FOLLOWER, observe(dcs=n2_ahead_tl2)),
        ("a member ahead on an old timeline", State.FOLLOWER, observe(dcs=n2_ahead_old_tl, pg=standby())),
        ("a member ahead the sync key rules out", State.FOLLOWER, observe("n1", evolve(
            ahead("n2", 9_000_000), sync=SyncState("n0", "n1")), config=sync)),
        ("switchover to anyone", State.LEADER, leader_view(dcs=cluster(failover=FailoverRequest(leader="n0")))),
        ("switchover, nobody fit", State.LEADER, leader_view(dcs=cluster(
            members=unfit, failover=FailoverRequest(leader="n0")))),
        ("history behind", State.LEADER, leader_view(postgres=primary(
            timeline=2, timeline_history=forked_history(end_of_tl1=4_000_000)), dcs=cluster(members=members(
            timeline=2)))),
        ("sync standby by wal", State.LEADER, leader_view(config=sync, dcs=cluster(members=tuple(
            evolve(m, wal_position=6_000_000) if m.name == "n2" else m for m in members())))),
        ("sync standby in sync state", State.LEADER, leader_view(config=sync, postgres=primary(
            sync_replicas=frozenset({"n2"}), synchronous_standby_names=frozenset({"n1", "n2"})))),
        ("nosync standby of the key", State.LEADER, leader_view(config=sync, dcs=cluster(
            sync=SyncState("n0", "n2"), members=tuple(
                evolve(m, tags=Tags(nosync=True)) if m.name == "n2" else m for m in members())),
            postgres=primary(sync_replicas=frozenset({"n2"})))),
        ("recovering primary", State.LEADER, leader_view(config=sync, postgres=primary(in_recovery=True))),
        ("recovering primary, sync key current", State.LEADER, leader_view(config=sync, dcs=cluster(
            sync=SyncState("n0", "n1")), postgres=primary(in_recovery=True, sync_replicas=frozenset({"n1"})))),
        ("sync mode, Postgres down", State.LEADER, leader_view(config=sync, postgres=stopped(), dcs=cluster(
            sync=SyncState("n0", "n1")))),
        ("a member ahead the sync key allows", State.FOLLOWER, observe("n1", evolve(
            ahead("n2", 9_000_000), sync=SyncState("n0", "n2")), config=sync)),
        ("a member ahead on an old timeline, before its fork", State.FOLLOWER, observe("n1", evolve(
            ahead("n2", 9_000_000), history=(TimelineSwitch(1, 10_000_000),), members=tuple(
                evolve(m, timeline=1 if m.name == "n2" else 2) for m in ahead("n2", 9_000_000).members)),
            standby(timeline=2))),
    ]  # fmt: skip


def situations() -> list[tuple[str, State, Observation]]:
    """Each rule case, the edge situations, then each other situation tests/test_decide.py hands to decide(), once,
    in test order."""
    seen = [(name, state, observation) for name, state, observation, _, _ in CASES] + _extra()
    recorded: list[tuple[State, Observation]] = []

    def recording(state: State, observation: Observation) -> Decision:
        recorded.append((state, observation))
        return decide(state, observation)

    test_decide.decide = recording  # type: ignore[assignment]
    try:
        for name, test in vars(test_decide).items():
            if name.startswith("test_") and callable(test):
                test()
    finally:
        test_decide.decide = decide
    known = {repr((state, observation)) for _, state, observation in seen}
    for state, observation in recorded:
        if repr((state, observation)) not in known:
            known.add(repr((state, observation)))
            seen.append((f"test_decide #{len(seen) - len(CASES) - len(_extra()) + 1}", state, observation))
    return seen


def dump_facts() -> str:
    """Each situation: the decision (rule, next state, every action with its arguments, why), then every fact
    with its value and note: the text an operator reads in the log."""
    lines = []
    for name, state, observation in situations():
        decision = decide(state, observation)
        facts = derive_facts(observation)
        lines.append(f"== {name}: {state.value} -> {decision.state.value} [{decision.rule}] {decision.why}")
        lines += [f"   {action!r}" for action in decision.actions]
        lines += [f"   {facts.explain(fact)}" for fact in FACT_DOCS]
    return "\n".join(lines) + "\n"


def test_facts_and_notes_of_every_rule_case_match_golden_dump():
    dump = dump_facts()
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        FACTS_GOLDEN.write_text(dump)
    assert dump == FACTS_GOLDEN.read_text(), "a fact, note or decision changed: review it and rewrite the golden file"


def test_generated_docs_are_current():
    assert diagram.stale_files() == []


def test_check_reports_a_stale_markdown(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "state-machine.md"
    stale.write_text(diagram.render_markdown().replace("lead_steady", "lead_stedy"))
    monkeypatch.setattr(diagram, "MARKDOWN_PATH", stale)
    assert diagram.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_check_reports_an_svg_drawn_from_another_table(tmp_path, monkeypatch):
    svg = tmp_path / "state-machine.svg"
    svg.write_text(diagram.SVG_PATH.read_text().replace(diagram.SOURCE_MARK, diagram.SOURCE_MARK + "0"))
    monkeypatch.setattr(diagram, "SVG_PATH", svg)
    assert diagram.stale_files() == [str(svg)]


def test_markdown_documents_every_rule_and_action():
    text = diagram.render_markdown()
    assert "stateDiagram-v2" in text
    for row in diagram.RULES:
        assert f"`{row.name}`" in text
    for name in diagram.ACTION_TYPES:
        assert f"`{name}`" in text
