"""The rule table's golden dump and the generated docs must match the table in fsm/transitions.py.

After an intended change to the table: REGENT_REWRITE_GOLDEN=1 pytest tests/test_golden.py, then
python -m model.diagram, and review both diffs."""

from __future__ import annotations

import os
from pathlib import Path

from model import diagram

GOLDEN = Path(__file__).resolve().parent / "golden" / "rule_table.txt"


def test_rule_table_matches_golden_dump():
    dump = diagram.dump_rules()
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        GOLDEN.write_text(dump)
    assert dump == GOLDEN.read_text(), "the rule table changed: review it and rewrite the golden file"


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
