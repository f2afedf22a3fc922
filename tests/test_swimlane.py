"""model.swimlane draws a simulator trace as SVG: well-formed, complete, escaped and deterministic."""

from __future__ import annotations

import ast
import copy
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from model.swimlane import WRITABLE_FILL, nice_step, render_swimlanes

SVG = "{http://www.w3.org/2000/svg}"


def make_trace() -> dict:
    return {
        "title": "leader-crash seed=7 nodes=3",
        "duration": 600.0,
        "nodes": ["n0", "n1", "n2"],
        "lanes": {
            "n0": [
                {"start": 0.0, "end": 50.0, "state": "bootstrap"},
                {"start": 50.0, "end": 131.2, "state": "leader"},
                {"start": 131.2, "end": 400.0, "state": "down"},
                {"start": 400.0, "end": 600.0, "state": "follower"},
            ],
            "n1": [
                {"start": 0.0, "end": 133.0, "state": "follower"},
                {"start": 133.0, "end": 180.0, "state": "candidate"},
                {"start": 180.0, "end": 500.0, "state": "leader"},
                {"start": 500.0, "end": 600.0, "state": "demoting"},
            ],
            "n2": [
                {"start": 0.0, "end": 150.0, "state": "follower"},
                {"start": 150.0, "end": 300.0, "state": "paused"},
                {"start": 300.0, "end": 600.0, "state": "follower"},
            ],
        },
        "leader_key": [
            {"start": 0.0, "end": 50.0, "holder": None},
            {"start": 50.0, "end": 131.0, "holder": "n0"},
            {"start": 131.0, "end": 180.0, "holder": None},
            {"start": 180.0, "end": 600.0, "holder": "n1"},
        ],
        "writable": [{"start": 52.1, "end": 130.5, "node": "n0"}, {"start": 182.0, "end": 499.0, "node": "n1"}],
        "faults": [
            {"t": 130.0, "node": "n0", "label": "crash n0"},
            {"t": 150.0, "node": "n2", "label": "pause n2"},
            {"t": 200.0, "node": None, "label": "heal"},
        ],
        "violations": [{"t": 145.0, "node": "n1", "invariant": "no_split_brain"}],
        "ignored_extra_key": {"anything": 1},
    }


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg.encode())
    return [el.text or "" for el in root.iter() if el.tag in (f"{SVG}text", f"{SVG}title")]


def test_parses_as_svg_with_title():
    root = ET.fromstring(render_swimlanes(make_trace()).encode())
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == "leader-crash seed=7 nodes=3"


def test_every_node_state_and_holder_is_labelled():
    drawn = texts(render_swimlanes(make_trace()))
    for name in ("n0", "n1", "n2", "leader key", "none"):
        assert name in drawn
    for state in ("bootstrap", "follower", "candidate", "leader", "demoting", "paused", "down"):
        assert drawn.count(state) >= 2, state  # once in a lane, once in the legend


def test_faults_and_violations_are_marked():
    svg = render_swimlanes(make_trace())
    drawn = texts(svg)
    assert {"crash n0", "pause n2", "heal", "VIOLATION: no_split_brain"} <= set(drawn)
    assert svg.count("<polygon") == 2  # triangles on n0 and n2; the heal has no node
    assert svg.count('stroke-dasharray="5 3"') == 3


def test_writable_strips_are_drawn():
    root = ET.fromstring(render_swimlanes(make_trace()).encode())
    strips = [el for el in root.iter(f"{SVG}rect") if el.get("fill") == WRITABLE_FILL]
    assert len(strips) == 3  # two intervals plus the legend swatch
    assert "accepts writes" in texts(render_swimlanes(make_trace()))


def test_rendering_is_deterministic():
    first = render_swimlanes(make_trace())
    assert render_swimlanes(copy.deepcopy(make_trace())) == first


def test_markup_in_labels_is_escaped():
    trace = make_trace()
    trace["title"] = "a <b> & c"
    trace["faults"].append({"t": 250.0, "node": "n1", "label": "<drop & delay>"})
    svg = render_swimlanes(trace)
    assert "<drop" not in svg and "&lt;drop &amp; delay&gt;" in svg
    assert "<drop & delay>" in texts(svg) and "a <b> & c" in texts(svg)


def test_narrow_intervals_get_no_text():
    trace = make_trace()
    trace["lanes"]["n2"] = [
        {"start": 0.0, "end": 0.5, "state": "candidate"},
        {"start": 0.5, "end": 600.0, "state": "follower"},
    ]
    trace["lanes"]["n1"] = [{"start": 0.0, "end": 600.0, "state": "follower"}]
    assert texts(render_swimlanes(trace)).count("candidate") == 1  # the legend only


def test_empty_trace_still_renders():
    ET.fromstring(render_swimlanes({"title": "empty", "duration": 0.0, "nodes": []}).encode())


def test_nice_steps_give_about_ten_ticks():
    assert nice_step(600.0) == 60
    assert nice_step(100.0) == 10
    assert nice_step(45.0) == 5
    assert nice_step(3.0) == 0.5
    assert 5 <= 3600.0 / nice_step(3600.0) <= 10


def test_imports_only_the_standard_library():
    source = Path(__file__).resolve().parent.parent / "model" / "swimlane.py"
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_long_node_names_are_clipped_to_the_label_column():
    trace = make_trace()
    long = "node-with-a-very-long-hostname"
    trace["nodes"][0] = long
    trace["lanes"][long] = trace["lanes"].pop("n0")
    drawn = texts(render_swimlanes(trace))
    assert long not in drawn
    assert any(t.startswith("node-with") and t.endswith("\u2026") for t in drawn)
