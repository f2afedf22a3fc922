"""The scenario scripts of tests/scripts/ run again with every node a real `runtime.agent.Agent` stepped against
in-memory ports over the simulator's models (`tests/agent_world.py`): the daemon's own turn (its reads, the node
core, the executor's handler table) must meet every `expect`, and its transcript must equal the reviewed golden
copy in tests/golden/agent-scripts/ (REGENT_REWRITE_GOLDEN=1 rewrites them; review the diff)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from model.script import Script, run_file
from tests.agent_world import AgentWorld

SCRIPTS = Path(__file__).parent / "scripts"
GOLDEN = Path(__file__).parent / "golden" / "agent-scripts"
# Its actions take no time, so a Postgres action cannot outlast ttl: tests/test_long_actions.py covers the
# agent's keepalive on a real cluster instead.
NEEDS_DURATIONS = {"slow-leader-restart"}


@pytest.mark.parametrize(
    "path", [p for p in sorted(SCRIPTS.glob("*.txt")) if p.stem not in NEEDS_DURATIONS], ids=lambda p: p.stem
)
def test_the_agent_meets_every_expectation_of_the_script(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # the executor's warnings of failed simulated actions are the transcript's
    transcript, failures = run_file(path, AgentWorld)
    golden = GOLDEN / path.name
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(transcript)
    assert "FAILED" not in transcript and failures == 0, transcript
    assert transcript == golden.read_text(), f"{path.name} changed: rewrite its golden copy and review the diff"


def test_the_turns_are_the_agents_own() -> None:
    """Not the simulator's driver: every node's turns are recorded by its Agent, through the ports."""
    script = Script(AgentWorld)
    script.run((SCRIPTS / "leader-crash.txt").read_text().splitlines())
    world = script.world
    assert isinstance(world, AgentWorld) and script.failures == 0
    assert all(len(agent.turns) > 3 for agent in world.agents.values())
    assert {agent.turns[-1].decision.rule for agent in world.agents.values()} <= {"lead_steady", "follow_steady"}
    assert all(world.nodes[name].memory == agent.memory for name, agent in world.agents.items())
