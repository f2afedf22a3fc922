"""Scenario scripts (`model/script.py`, etcd-io/raft's testdata style): each script in tests/scripts/ runs on the
simulator, whose nodes step the production node core; its transcript must equal the reviewed golden copy in
tests/golden/scripts/ and every `expect` in it must hold. REGENT_REWRITE_GOLDEN=1 rewrites the copies; review
the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.script import Script, ScriptError, main, run_file

SCRIPTS = Path(__file__).parent / "scripts"
GOLDEN = Path(__file__).parent / "golden" / "scripts"


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.txt")), ids=lambda p: p.stem)
def test_script_transcript_matches_its_golden_copy(path: Path) -> None:
    transcript, failures = run_file(path)
    golden = GOLDEN / path.name
    if os.environ.get("REGENT_REWRITE_GOLDEN"):
        golden.write_text(transcript)
    assert "FAILED" not in transcript and failures == 0, transcript
    assert transcript == golden.read_text(), f"{path.name} changed: rewrite its golden copy and review the diff"


def test_a_failed_expectation_is_reported_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "wrong.txt"
    script.write_text("start 3\nexpect leader n0\n")
    assert main([str(script)]) == 1
    assert "FAILED: leader is n1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["tick 5s"], "the first command must be start"),
        (["start 3", "meteor n0"], "unknown command 'meteor'"),
        (["start 3", "tick 5"], "a duration ends with s"),
        (["start 3", "expect happiness"], "unknown expectation"),
    ],
)
def test_bad_scripts_name_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        Script().run(lines)
