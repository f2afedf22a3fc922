"""What a simulation run records: one line per event, interval timelines for the swimlanes, and the summary data.

Lines have documented columns: simulated seconds, node, then either `from -> to [rule] why` for a decision
that changed the node's state or rule, or `FAULT label`, or `NOTE text`, or `VIOLATION invariant: detail`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Intervals:
    """A value over time, as closed-open intervals; `set` opens a new one only when the value changes."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def set(self, t: float, key: str, value: Any) -> None:
        if self.items and self.items[-1][key] == value:
            return
        if self.items:
            self.items[-1]["end"] = t
        self.items.append({"start": t, "end": None, key: value})

    def close(self, t: float) -> list[dict[str, Any]]:
        if self.items and self.items[-1]["end"] is None:
            self.items[-1]["end"] = t
        return self.items


@dataclass
class Trace:
    nodes: list[str]
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    lanes: dict[str, Intervals] = field(default_factory=dict)
    leader_key: Intervals = field(default_factory=Intervals)
    writable: dict[str, Intervals] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lanes = {n: Intervals() for n in self.nodes}
        self.writable = {n: Intervals() for n in self.nodes}

    def _line(self, t: float, node: str | None, text: str) -> None:
        self.lines.append(f"{t:9.3f}  {node or '-':<4} {text}")

    def decision(self, t: float, node: str, before: str, after: str, rule: str, why: str) -> None:
        self._line(t, node, f"{before:>9} -> {after:<9} [{rule}] {why}")
        self.events.append(
            {"t": round(t, 3), "node": node, "kind": "decision", "from": before, "to": after, "rule": rule, "why": why}
        )

    def fault(self, t: float, node: str | None, label: str) -> None:
        self._line(t, node, f"FAULT {label}")
        self.faults.append({"t": round(t, 3), "node": node, "label": label})
        self.events.append({"t": round(t, 3), "node": node, "kind": "fault", "label": label})

    def note(self, t: float, node: str | None, text: str) -> None:
        self._line(t, node, f"NOTE {text}")
        self.events.append({"t": round(t, 3), "node": node, "kind": "note", "text": text})

    def violation(self, t: float, node: str | None, invariant: str, detail: str) -> None:
        self._line(t, node, f"VIOLATION {invariant}: {detail}")
        self.violations.append({"t": round(t, 3), "node": node, "invariant": invariant, "detail": detail})
        self.events.append(
            {"t": round(t, 3), "node": node, "kind": "violation", "invariant": invariant, "detail": detail}
        )

    def timelines(self, end: float) -> dict[str, Any]:
        def rounded(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**i, "start": round(i["start"], 3), "end": round(i["end"], 3)} for i in items]

        writable = [
            {"start": i["start"], "end": i["end"], "node": node}
            for node, ivs in self.writable.items()
            for i in ivs.close(end)
            if i["on"]
        ]
        return {
            "lanes": {n: rounded(ivs.close(end)) for n, ivs in self.lanes.items()},
            "leader_key": rounded(self.leader_key.close(end)),
            "writable": rounded(sorted(writable, key=lambda i: (i["start"], i["node"]))),
            "faults": self.faults,
            "violations": self.violations,
        }
