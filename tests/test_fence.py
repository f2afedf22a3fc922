"""The fence's deadline code (`Fence`, `serve` in adapters/watchdog_fence.py) without a real process or clock.

The module's `time` and `select` are replaced by a fake clock that only moves when the fence sleeps (a `select`
that finds nothing to read, or a `time.sleep`), and `kill_postmaster` by a recorder: every firing is exact, so the
tests state when the fence fires to the microsecond and how late it says it was. The real fence process, against
real processes and a real Postgres, is tests/test_watchdog.py.
"""

from __future__ import annotations

import logging
import os
import select as real_select
from pathlib import Path

import pytest

from adapters import watchdog_fence
from adapters.watchdog_fence import Fence, serve

PID_FILE = "/data/postmaster.pid"


class FakeClock:
    """`time` and `select` for the fence: `now` moves only when the fence waits."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.kills: list[tuple[float, Path, str]] = []  # (when, pid file, why)
        self.on_idle = None  # called when the fence would block for ever with nothing to read
        self.running: tuple[int, int] | None = (4242, 7)  # the postmaster running now (pid, start time)
        self.guarded: list[tuple[int, int] | None] = []  # what each kill was limited to
        self.selects = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds

    def select(self, rlist, wlist, xlist, timeout=None):  # type: ignore[no-untyped-def]
        self.selects += 1
        assert self.selects < 1000, "the fence spins without reading or sleeping"
        readable, _, _ = real_select.select(rlist, wlist, xlist, 0)
        if readable:
            return readable, [], []
        if timeout is None:
            idle, self.on_idle = self.on_idle, None
            assert idle is not None, "the fence would wait for ever"
            idle()
            return real_select.select(rlist, wlist, xlist, 0)
        assert timeout >= 0
        self.now += timeout
        return [], [], []

    def kill(self, pid_file: Path, why: str, only: tuple[int, int] | None = None) -> str:
        self.kills.append((self.now, pid_file, why))
        self.guarded.append(only)
        return f"killed #{len(self.kills)}"

    def identity(self, pid_file: Path) -> tuple[int, int] | None:
        return self.running


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(watchdog_fence, "time", fake)
    monkeypatch.setattr(watchdog_fence, "select", fake)
    monkeypatch.setattr(watchdog_fence, "kill_postmaster", fake.kill)
    monkeypatch.setattr(watchdog_fence, "postmaster_identity", fake.identity)
    return fake


def test_arm_guards_until_the_deadline_and_fires_exactly_at_it(clock: FakeClock):
    fence = Fence()
    assert fence.handle(f"arm 1002.5 {PID_FILE}\n") == "ok armed for 2.500 s"
    assert (fence.deadline, fence.pid_file) == (1002.5, Path(PID_FILE))
    clock.now = 1002.499
    fence.fire_if_due()
    assert clock.kills == [] and fence.deadline == 1002.5
    clock.now = 1002.5  # at the deadline itself the lease gives no right to write: it fires
    fence.fire_if_due()
    assert clock.kills == [(1002.5, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]
    assert fence.deadline is None and fence.fired == "killed #1"
    fence.fire_if_due()  # disarmed by the firing: it fires once
    assert len(clock.kills) == 1


def test_the_firing_says_how_late_the_agent_was(clock: FakeClock):
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    clock.now = 1001.25
    fence.fire_if_due()
    assert clock.kills == [(1001.25, Path(PID_FILE), "the agent missed its lease deadline by 0.250 s")]


def test_a_deadline_already_passed_or_at_now_fires_at_once(clock: FakeClock):
    fence = Fence()
    assert fence.handle(f"arm 1000 {PID_FILE}") == "error deadline already passed: killed #1"
    assert clock.kills == [(1000.0, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]
    assert fence.deadline is None and fence.fired == ""  # the answer reported the firing
    assert fence.handle("ping 1010") == "error not armed"
    assert fence.handle(f"arm 999 {PID_FILE}") == "error deadline already passed: killed #2"
    assert clock.kills[1][2] == "the agent missed its lease deadline by 1.000 s"


def test_a_deadline_just_ahead_arms(clock: FakeClock):
    fence = Fence()
    assert fence.handle(f"arm 1000.001 {PID_FILE}") == "ok armed for 0.001 s"
    assert clock.kills == [] and fence.deadline == 1000.001


def test_ping_moves_the_deadline_later_or_earlier(clock: FakeClock):
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    assert fence.handle("ping 1005") == "ok armed for 5.000 s"
    clock.now = 1003
    fence.fire_if_due()
    assert clock.kills == [] and fence.deadline == 1005
    assert fence.handle("ping 1004") == "ok armed for 1.000 s"
    assert fence.deadline == 1004
    assert fence.handle("ping 1003") == "error deadline already passed: killed #1"
    assert fence.deadline is None


def test_a_command_read_after_the_deadline_is_too_late(clock: FakeClock):
    """The deadline rules: a ping that arrives late neither renews nor escapes the firing; it hears of it, once."""
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    clock.now = 1001
    assert fence.handle("ping 1010") == "error fired: killed #1"
    assert fence.deadline is None and fence.fired == ""
    assert fence.handle("ping 1010") == "error not armed"


def test_a_late_arm_or_disarm_still_fires_first(clock: FakeClock):
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    clock.now = 1002
    assert fence.handle("disarm") == "ok disarmed"
    assert len(clock.kills) == 1 and fence.fired == ""  # the disarm came too late, and forgets the firing
    assert fence.handle("ping 1010") == "error not armed"
    fence.handle(f"arm 1003 {PID_FILE}")
    clock.now = 1003
    assert fence.handle(f"arm 1010 {PID_FILE}") == "ok armed for 7.000 s"  # a new arm starts afresh
    assert len(clock.kills) == 2 and fence.fired == ""
    assert fence.handle("ping 1011") == "ok armed for 8.000 s"


def test_disarm_stops_guarding(clock: FakeClock):
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    assert fence.handle("disarm") == "ok disarmed"
    clock.now = 2000
    fence.fire_if_due()
    assert clock.kills == [] and fence.deadline is None
    assert fence.handle("ping 2010") == "error not armed"


def test_arm_reads_the_pid_file_path_whole(clock: FakeClock):
    fence = Fence()
    assert fence.handle("arm 1001 /data dir/postmaster.pid") == "ok armed for 1.000 s"
    assert fence.pid_file == Path("/data dir/postmaster.pid")


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("arm 1001", "error arm needs a deadline and a pid file"),
        ("arm", "error arm needs a deadline and a pid file"),
        (f"arm soon {PID_FILE}", f"error bad deadline in 'arm soon {PID_FILE}'"),
        (f"arm inf {PID_FILE}", f"error bad deadline in 'arm inf {PID_FILE}'"),
        (f"arm nan {PID_FILE}", f"error bad deadline in 'arm nan {PID_FILE}'"),
        ("ping", "error bad deadline in 'ping'"),
        ("ping -inf", "error bad deadline in 'ping -inf'"),
        (" ping  later \n", "error bad deadline in 'ping  later'"),
        ("pong 1001", "error unknown command 'pong 1001'"),
        ("", "error unknown command ''"),
    ],
)
def test_bad_commands_are_answered_and_change_nothing(clock: FakeClock, line: str, answer: str):
    fence = Fence()
    fence.handle(f"arm 1001 {PID_FILE}")
    assert fence.handle(line) == answer
    assert fence.deadline == 1001 and fence.pid_file == Path(PID_FILE) and clock.kills == []


def test_ping_unarmed_and_bad_arm_leave_the_fence_disarmed(clock: FakeClock):
    fence = Fence()
    assert fence.handle("ping 1001") == "error not armed"
    assert fence.handle(f"arm never {PID_FILE}") == f"error bad deadline in 'arm never {PID_FILE}'"
    assert fence.deadline is None
    clock.now = 5000
    fence.fire_if_due()
    assert clock.kills == []


# serve: the command loop over a pipe


class Channel:
    """The agent's ends of the fence's stdin and stdout pipes."""

    def __init__(self) -> None:
        self.fence_stdin, self.agent_out = os.pipe()
        self.agent_in, self.fence_stdout = os.pipe()

    def send(self, data: bytes) -> None:
        os.write(self.agent_out, data)

    def hang_up(self) -> None:
        os.close(self.agent_out)

    def answers(self) -> list[str]:
        os.close(self.fence_stdout)
        data = b""
        while chunk := os.read(self.agent_in, 65536):
            data += chunk
        os.close(self.agent_in)
        os.close(self.fence_stdin)
        return data.decode().splitlines()


def test_serve_answers_each_command_line_and_exits_when_the_agent_hangs_up_disarmed(clock: FakeClock):
    channel = Channel()
    channel.send(f"arm 1005 {PID_FILE}\nping 1006\npong\n\xff\n".encode("latin-1") + b"disarm\nping 10")
    channel.hang_up()  # an unfinished last line is not a command
    assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert channel.answers() == [
        "ok armed for 5.000 s",
        "ok armed for 6.000 s",
        "error unknown command 'pong'",
        "error unknown command '\ufffd'",
        "ok disarmed",
    ]
    assert clock.kills == [] and clock.now == 1000  # disarmed: it exits at once, and never slept


def test_serve_fires_at_the_deadline_while_the_agent_is_silent(clock: FakeClock):
    channel = Channel()
    channel.send(f"arm 1005 {PID_FILE}\n".encode())
    fence = Fence()

    def agent_pings_late_then_hangs_up() -> None:  # once fired and disarmed, the fence waits for the agent
        assert clock.kills == [(1005.0, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]
        channel.send(b"ping 1010\nping 1010\n")
        channel.hang_up()

    clock.on_idle = agent_pings_late_then_hangs_up
    assert serve(fence, channel.fence_stdin, channel.fence_stdout) == 0
    assert channel.answers() == ["ok armed for 5.000 s", "error fired: killed #1", "error not armed"]
    assert len(clock.kills) == 1 and clock.now == 1005


def test_a_dead_agents_fence_still_fires_at_its_deadline_then_exits(clock: FakeClock, caplog: pytest.LogCaptureFixture):
    channel = Channel()
    channel.send(f"arm 1002 {PID_FILE}\nping 1007.5\n".encode())
    channel.hang_up()
    with caplog.at_level(logging.WARNING, logger=watchdog_fence.log.name):
        assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert clock.kills == [(1007.5, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]
    assert clock.now == 1007.5
    assert [r.getMessage() for r in caplog.records] == [
        "the agent closed its channel while armed (did it die?); firing at the deadline in 7.500 s"
    ]
    assert channel.answers() == ["ok armed for 2.000 s", "ok armed for 7.500 s"]
    assert clock.guarded == [(4242, 7)], "once orphaned it guards only the postmaster its agent left"


def test_a_dead_agents_fence_with_no_postmaster_left_exits_at_once(clock: FakeClock, caplog: pytest.LogCaptureFixture):
    clock.running = None
    channel = Channel()
    channel.send(f"arm 1002 {PID_FILE}\n".encode())
    channel.hang_up()
    with caplog.at_level(logging.WARNING, logger=watchdog_fence.log.name):
        assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert clock.kills == [] and clock.now == 1000.0
    assert "no postmaster runs: nothing to fence" in caplog.text


def test_an_unwritable_answer_does_not_stop_the_fence(clock: FakeClock):
    """The agent closed its end of stdout (SIGPIPE is ignored, so the write fails with EPIPE): the deadline holds."""
    channel = Channel()
    os.close(channel.agent_in)
    channel.send(f"arm 1003 {PID_FILE}\n".encode())
    channel.hang_up()
    assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert [when for when, _, _ in clock.kills] == [1003.0]
    os.close(channel.fence_stdout)
    os.close(channel.fence_stdin)


def test_a_deadline_under_a_second_away_is_kept_to_the_microsecond(clock: FakeClock):
    """The fence sleeps exactly until the deadline, never a coarse poll (a second late is a second of writes)."""
    channel = Channel()
    channel.send(f"arm 1000.25 {PID_FILE}\n".encode())
    clock.on_idle = channel.hang_up
    assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert clock.kills == [(1000.25, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]
    assert channel.answers() == ["ok armed for 0.250 s"]


def test_a_dead_agents_fence_fires_exactly_at_a_deadline_under_a_second_away(clock: FakeClock):
    channel = Channel()
    channel.send(f"arm 1000.5 {PID_FILE}\n".encode())
    channel.hang_up()
    assert serve(Fence(), channel.fence_stdin, channel.fence_stdout) == 0
    assert clock.kills == [(1000.5, Path(PID_FILE), "the agent missed its lease deadline by 0.000 s")]


def test_a_command_split_across_reads_is_put_together(clock: FakeClock):
    channel = Channel()
    channel.send(b"arm 1005 /data/")

    def rest_of_the_line() -> None:
        channel.send(b"postmaster.pid\n")
        clock.on_idle = channel.hang_up

    clock.on_idle = rest_of_the_line
    fence = Fence()
    assert serve(fence, channel.fence_stdin, channel.fence_stdout) == 0
    assert channel.answers() == ["ok armed for 5.000 s"]
    assert fence.pid_file == Path(PID_FILE)


def test_the_fence_process_talks_on_its_stdin_and_stdout(clock: FakeClock):
    """`main` runs `serve(Fence())`: by default the commands come on fd 0 and the answers go to fd 1."""
    channel = Channel()
    channel.send(b"ping 1001\ndisarm\n")
    channel.hang_up()
    saved = os.dup(0), os.dup(1)
    try:
        os.dup2(channel.fence_stdin, 0)
        os.dup2(channel.fence_stdout, 1)
        status = serve(Fence())
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        os.close(saved[0])
        os.close(saved[1])
    assert status == 0
    assert channel.answers() == ["error not armed", "ok disarmed"]
