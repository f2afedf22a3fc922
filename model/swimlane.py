"""Swimlane SVG of one simulated cluster run, from the trace dict `model.simulate` records.

Draws one lane per node coloured by agent state (bootstrap, follower, candidate, leader, demoting, down, paused),
a thin dark-red strip under each lane where that node's Postgres accepted writes, a "leader key" lane naming the
holder, dashed fault markers (a triangle on the faulted node's lane), solid red violation markers, a time axis in
seconds and a legend. Standard library only; the same trace always renders to byte-identical SVG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

WIDTH = 1200
PLOT_X0, PLOT_X1 = 120, WIDTH - 20  # left of PLOT_X0 is the node-name column
LANE_H, STRIP_H, PITCH = 28, 6, 40  # lane height, writable strip under it, lane-to-lane distance
CHAR_W = 7  # rough px per character at font-size 12
ROW_H = 15  # one row of fault/violation labels
STATE_FILLS = {
    "bootstrap": "#b0bec5",
    "follower": "#90caf9",
    "candidate": "#f9a825",
    "leader": "#2e7d32",
    "demoting": "#ef6c00",
    "paused": "#8e24aa",
    "down": "#424242",
}
DARK_FILLS = {"#2e7d32", "#8e24aa", "#424242"}  # white text on these, black on the rest
UNKNOWN_FILL = "#ffffff"
WRITABLE_FILL = "#b71c1c"
KEY_HELD_FILL, KEY_NONE_FILL = "#fff3c4", "#9e9e9e"
FAULT_COLOUR, VIOLATION_COLOUR = "#263238", "#d50000"
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


def _n(v: float) -> str:
    return f"{v:.1f}"


def _rect(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{extra}/>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"{extra}/>'


def _text(x: float, y: float, s: object, fill: str = "#000000", anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" fill="{fill}" text-anchor="{anchor}"{extra}>{escape(str(s))}</text>'


def _fits(label: str, width: float) -> bool:
    return len(label) * CHAR_W + 6 <= width


def _clip(label: str, width: float) -> str:
    """`label` shortened with an ellipsis to fit `width` px."""
    room = max(int(width // CHAR_W), 2)
    return label if len(label) <= room else label[: room - 1] + "\u2026"


def nice_step(duration: float) -> float:
    """The smallest round tick step giving at most ~10 ticks over `duration` seconds."""
    for step in NICE_STEPS:
        if duration / step <= 10:
            return step
    return NICE_STEPS[-1] * math.ceil(duration / NICE_STEPS[-1] / 10)


def _bar(x_of: Callable[[float], float], y: float, start: float, end: float, fill: str, label: str) -> list[str]:
    """One interval of a lane: a filled rectangle, with its label centred if it fits."""
    x0, x1 = x_of(start), x_of(end)
    if x1 <= x0:
        return []
    out = [_rect(x0, y, x1 - x0, LANE_H, fill, ' stroke="#ffffff" stroke-width="1"')]
    if label and _fits(label, x1 - x0):
        colour = "#ffffff" if fill in DARK_FILLS else "#000000"
        out.append(_text((x0 + x1) / 2, y + LANE_H / 2 + 4, label, colour, "middle"))
    return out


def _marks(trace: dict[str, Any]) -> list[tuple[float, str, str, Any]]:
    """Faults and violations as (t, label, kind, node), in time order."""
    marks = [(float(f["t"]), str(f.get("label", "")), "fault", f.get("node")) for f in trace.get("faults") or []]
    for v in trace.get("violations") or []:
        marks.append((float(v["t"]), f"VIOLATION: {v.get('invariant', '?')}", "violation", v.get("node")))
    return sorted(marks, key=lambda m: (m[0], m[2], m[1], str(m[3])))


def _label_rows(xs_labels: list[tuple[float, str]]) -> list[tuple[int, str]]:
    """Greedy row per marker label so labels never overlap; returns (row, text-anchor) per label."""
    row_ends: list[float] = []
    placed = []
    for x, label in xs_labels:
        w = len(label) * CHAR_W + 4
        anchor, left, right = ("start", x, x + w) if x + w <= WIDTH - 4 else ("end", x - w, x)
        row = next((i for i, end in enumerate(row_ends) if left > end + 6), len(row_ends))
        if row == len(row_ends):
            row_ends.append(right)
        else:
            row_ends[row] = right
        placed.append((row, anchor))
    return placed


def _axis(x_of: Callable[[float], float], duration: float, y: float) -> list[str]:
    step = nice_step(duration)
    out = [_line(PLOT_X0, y, PLOT_X1, y, "#000000")]
    for i in range(int(duration / step + 1e-9) + 1):
        t = i * step
        x = x_of(t)
        out.append(_line(x, y, x, y + 5, "#000000"))
        out.append(_text(x, y + 18, f"{t:.1f}" if step < 1 else f"{t:.0f}", anchor="middle", extra=' font-size="11"'))
    out.append(_text(PLOT_X0 - 8, y + 18, "time (s)", anchor="end", extra=' font-size="11"'))
    return out


def _legend(y: float) -> tuple[list[str], float]:
    """Swatches for every state and marker kind, wrapped to the width; returns the elements and the bottom y."""
    items = [(s, "state", fill) for s, fill in STATE_FILLS.items()]
    items += [("accepts writes", "strip", WRITABLE_FILL), ("leader key held", "state", KEY_HELD_FILL)]
    items += [("no leader key", "state", KEY_NONE_FILL), ("fault", "fault", FAULT_COLOUR)]
    items += [("violation", "violation", VIOLATION_COLOUR)]
    out, x = [], float(PLOT_X0)
    for label, kind, colour in items:
        w = 22 + len(label) * CHAR_W + 16
        if x + w > PLOT_X1:
            x, y = float(PLOT_X0), y + 20
        if kind == "state":
            out.append(_rect(x, y - 10, 16, 12, colour, ' stroke="#616161" stroke-width="0.5"'))
        elif kind == "strip":
            out.append(_rect(x, y - 6, 16, STRIP_H, colour))
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "fault" else ""
            out.append(_line(x + 8, y - 12, x + 8, y + 3, colour, f' stroke-width="2"{dash}'))
        out.append(_text(x + 22, y, label))
        x += w
    return out, y + 10


def render_swimlanes(trace: dict[str, Any]) -> str:
    """An SVG document (a string) drawing `trace` as swimlanes; see the module docstring."""
    duration = float(trace.get("duration") or 0.0) or 1.0
    nodes = [str(n) for n in trace.get("nodes") or []]
    title = str(trace.get("title", "Regent run"))

    def x_of(t: float) -> float:
        return PLOT_X0 + (PLOT_X1 - PLOT_X0) * min(max(float(t), 0.0), duration) / duration

    marks = _marks(trace)
    placed = _label_rows([(x_of(t), label) for t, label, _, _ in marks])
    band_top = 46.0
    lanes_top = band_top + ROW_H * (max((r for r, _ in placed), default=-1) + 1) + 8
    lane_y = {node: lanes_top + i * PITCH for i, node in enumerate(nodes)}
    key_y = lanes_top + len(nodes) * PITCH
    lanes_bottom = key_y + LANE_H
    body = [_text(12, 26, title, extra=' font-size="16" font-weight="bold"')]

    for node, y in lane_y.items():
        name = _clip(node, PLOT_X0 - 20)
        body.append(_text(PLOT_X0 - 8, y + LANE_H / 2 + 4, name, anchor="end", extra=' font-weight="bold"'))
        body.append(_rect(PLOT_X0, y + LANE_H + 1, PLOT_X1 - PLOT_X0, STRIP_H, "#eeeeee"))  # writable track
        for iv in (trace.get("lanes") or {}).get(node, []):
            state = str(iv.get("state", "?"))
            body += _bar(x_of, y, iv["start"], iv["end"], STATE_FILLS.get(state, UNKNOWN_FILL), state)
    for iv in trace.get("writable") or []:
        y = lane_y.get(str(iv.get("node")))
        if y is not None and x_of(iv["end"]) > x_of(iv["start"]):
            x0 = x_of(iv["start"])
            body.append(_rect(x0, y + LANE_H + 1, x_of(iv["end"]) - x0, STRIP_H, WRITABLE_FILL))

    body.append(_text(PLOT_X0 - 8, key_y + LANE_H / 2 + 4, "leader key", anchor="end", extra=' font-style="italic"'))
    for iv in trace.get("leader_key") or []:
        holder = iv.get("holder")
        fill, label = (KEY_NONE_FILL, "none") if holder is None else (KEY_HELD_FILL, str(holder))
        body += _bar(x_of, key_y, iv["start"], iv["end"], fill, label)

    labels: list[str] = []  # drawn after every marker line
    for (t, label, kind, node), (row, anchor) in zip(marks, placed, strict=True):
        x, y_label = x_of(t), band_top + ROW_H * row + 11
        colour = VIOLATION_COLOUR if kind == "violation" else FAULT_COLOUR
        style = ' stroke-width="2"' if kind == "violation" else ' stroke-width="1.5" stroke-dasharray="5 3"'
        body.append(_line(x, y_label - 10, x, lanes_bottom, "#ffffff", ' stroke-width="4" stroke-opacity="0.7"'))
        body.append(_line(x, y_label - 10, x, lanes_bottom, colour, style))
        weight = ' font-weight="bold"' if kind == "violation" else ""
        halo = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # stays legible over other markers
        labels.append(_text(x + 3 if anchor == "start" else x - 3, y_label, label, colour, anchor, weight + halo))
        y = lane_y.get(str(node)) if node is not None else None
        if y is not None and kind == "fault":  # triangle pointing down into the faulted node's lane
            pts = f"{_n(x - 6)},{_n(y)} {_n(x + 6)},{_n(y)} {_n(x)},{_n(y + 10)}"
            body.append(f'<polygon points="{pts}" fill="#ffeb3b" stroke="#000000" stroke-width="1"/>')
        elif y is not None:  # a ringed dot on the lane where the invariant broke
            body.append(f'<circle cx="{_n(x)}" cy="{_n(y + LANE_H / 2)}" r="5" fill="{colour}" stroke="#ffffff"/>')
    body += labels
    body += _axis(x_of, duration, lanes_bottom + 8)
    legend, bottom = _legend(lanes_bottom + 56)
    body += legend
    height = math.ceil(bottom + 8)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        ' font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">'
    )
    lines = [head, f"<title>{escape(title)}</title>", _rect(0, 0, WIDTH, height, "#ffffff"), *body, "</svg>"]
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + "\n".join(lines) + "\n"
