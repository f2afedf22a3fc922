"""The rule table's golden dump and the generated docs must match the table in fsm/transitions.py; the facts,
notes and decisions of every rule case (tests/test_rules.py) must match their golden dump.

After an intended change to the table, a fact or a note: REGENT_REWRITE_GOLDEN=1 pytest tests/test_golden.py, then
python -m model.diagram, and review the diffs."""

from __future__ import annotations

import os
from pathlib import Path

from fsm import Decision, Observation, State, decide
from fsm.facts import FACT_DOCS, derive_facts
from model import diagram
from tests import test_decide
from tests.test_rules import CASES

GOLDEN = Path(__file__).resolve().parent / "golden" / "rule_table.txt"
FACTS_GOLDEN = GOLDEN.with_name("facts.txt")


def test_rule_table_matches_golden_dump():
    dump = diagram.dump_rules()
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        GOLDEN.write_text(dump)
    assert dump == GOLDEN.read_text(), "the rule table changed: review it and rewrite the golden file"


def situations() -> list[tuple[str, State, Observation]]:
    """Each rule case, then each other situation tests/test_decide.py hands to decide(), once, in test order."""
    seen = [(name, state, observation) for name, state, observation, _, _ in CASES]
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
            seen.append((f"test_decide #{len(seen) - len(CASES) + 1}", state, observation))
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
