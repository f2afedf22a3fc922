"""Simulate a Regent cluster through a failure scenario, deterministically from a seed.

    python -m model.simulate --list
    python -m model.simulate --scenario leader-crash --seed 1 [--nodes 3 --duration 600 --ttl 30 --loop-wait 10
        --retry-timeout 8 --max-lag 1048576 --sync --failsafe [--failsafe-unsafe NODE] --dcs etcd|zookeeper
        --no-watchdog] [--format text|json] [--svg FILE] [--runs K]

Text output: one line per event (seconds, node, `from -> to [rule] why`, FAULT, NOTE or VIOLATION), then a
summary. Exit status: 0 when every invariant held, 1 on a violation (the trace ends at it), 2 on bad usage.
The same seed and settings print byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

from fsm.lease import lease_timing_problems
from fsm.observation import ClusterConfig, InvalidObservation
from model.faults import KINDS, Fault, inject
from model.scenarios import SCENARIOS, Scenario, heal_at
from model.swimlane import render_swimlanes
from model.world import Settings, World


@dataclass
class Result:
    scenario: str
    seed: int
    settings: Settings
    world: World
    summary: dict[str, Any]
    schedule: str = ""  # the fault schedule of a custom scenario

    @property
    def ok(self) -> bool:
        return not self.summary["violations"]


def simulate(scenario: Scenario, settings: Settings, seed: int) -> Result:
    """Run one scenario to its end (or its first violation) and summarise it."""
    if scenario.config:
        settings = replace(settings, config=replace(settings.config, **scenario.config))
    if scenario.watchdog is not None:
        settings = replace(settings, watchdog=scenario.watchdog)
    if scenario.dcs_kind is not None:
        settings = replace(settings, dcs_kind=scenario.dcs_kind)
    if scenario.failsafe_unaware is not None:
        settings = replace(settings, failsafe_unaware=scenario.failsafe_unaware)
    world = World(settings, seed)
    for fault in scenario.schedule(settings.duration_s, settings.config.ttl_s, world.rng):
        world.at(fault.at_s, inject, world, fault)
    world.run(settings.duration_s)
    custom = "" if scenario.name in SCENARIOS else scenario.summary
    return Result(scenario.name, seed, settings, world, _summarise(world), custom)


def _summarise(world: World) -> dict[str, Any]:
    checker, end = world.checker, world.t
    windows = list(checker.windows)
    if checker.unavailable_since is not None:
        windows.append((checker.unavailable_since, end, checker.last_server, None))
    outages = [w for w in windows if w[2] is not None]  # the first window is the cluster's bootstrap
    failovers = [w for w in outages if w[3] is not None and w[3] != w[2]]
    lost = sum(max(0, world.acked.get(seg, 0) - fork) for seg, fork in world.forks.items())
    serving = world.serving_primary()
    return {
        "final_leader": serving.name if serving else None,
        "failovers": [
            {"from": a, "to": b, "start": round(s, 3), "end": round(e, 3), "duration_s": round(e - s, 3)}
            for s, e, a, b in failovers
        ],
        "unavailability": [
            {"start": round(s, 3), "end": round(e, 3), "duration_s": round(e - s, 3)} for s, e, _, _ in outages
        ],
        "unavailable_s": round(sum(e - s for s, e, _, _ in outages), 3),
        "promotions": world.promotions,
        "acked_lost_tx": lost // world.settings.tx_bytes,
        "violations": world.trace.violations,
    }


def _settings_line(result: Result) -> str:
    s, c = result.settings, result.settings.config
    return (
        f"scenario {result.scenario}, seed {result.seed}, {s.nodes} nodes, {s.dcs_kind}, ttl {c.ttl_s:g} s, "
        f"loop_wait {c.loop_wait_s:g} s, retry_timeout {c.retry_timeout_s:g} s, max lag "
        f"{c.maximum_lag_on_failover_bytes} B, sync {'on' if c.synchronous_mode else 'off'}, "
        f"{_failsafe_words(s)}watchdog {'on' if s.watchdog else 'off'}, {s.duration_s:g} s"
    )


def _failsafe_words(s: Settings) -> str:
    """What the settings line says of failsafe mode: nothing when it is off."""
    if not s.config.failsafe_mode:
        return ""
    unaware = f" ({s.failsafe_unaware}'s agent predates it)" if s.failsafe_unaware else ""
    return f"failsafe on{unaware}, "


def _replay_args(result: Result) -> str:
    """The command-line arguments that run `result` again: the scenario, the seed and every non-default setting."""
    s, c, default = result.settings, result.settings.config, ClusterConfig()
    args = [
        f"--scenario {result.scenario}" if result.scenario in SCENARIOS else f"--schedule '{result.schedule}'",
        f"--seed {result.seed}",
    ]
    flags = [
        (s.nodes != 3, f"--nodes {s.nodes}"),
        (s.duration_s != 600, f"--duration {s.duration_s:g}"),
        (s.dcs_kind != "etcd", f"--dcs {s.dcs_kind}"),
        (not s.watchdog, "--no-watchdog"),
        (c.synchronous_mode, "--sync"),
        (c.failsafe_mode and s.failsafe_unaware is None, "--failsafe"),
        (s.failsafe_unaware is not None, f"--failsafe-unsafe {s.failsafe_unaware}"),
        (c.ttl_s != default.ttl_s, f"--ttl {c.ttl_s:g}"),
        (c.loop_wait_s != default.loop_wait_s, f"--loop-wait {c.loop_wait_s:g}"),
        (c.retry_timeout_s != default.retry_timeout_s, f"--retry-timeout {c.retry_timeout_s:g}"),
        (c.safety_margin_s != default.safety_margin_s, f"--safety-margin {c.safety_margin_s:g}"),
        (
            c.maximum_lag_on_failover_bytes != default.maximum_lag_on_failover_bytes,
            f"--max-lag {c.maximum_lag_on_failover_bytes}",
        ),
    ]
    return " ".join(args + [flag for needed, flag in flags if needed])


def render_text(result: Result) -> str:
    summary = result.summary
    out = [f"# {_settings_line(result)}", *result.world.trace.lines, "", "summary"]
    out.append(f"  final leader: {summary['final_leader'] or 'none'}; promotions: {summary['promotions']}")
    for f in summary["failovers"]:
        out.append(f"  failover {f['from']} -> {f['to']}: {f['duration_s']:.3f} s ({f['start']:.3f} .. {f['end']:.3f})")
    windows = summary["unavailability"]
    out.append(f"  write unavailability: {len(windows)} window(s), {summary['unavailable_s']:.3f} s in total")
    out.append(f"  acknowledged transactions lost: {summary['acked_lost_tx']}")
    if summary["violations"]:
        v = summary["violations"][0]
        out.append(f"  invariants: VIOLATED {v['invariant']} at {v['t']:.3f} s ({v['node'] or '-'}): {v['detail']}")
        out.append(f"  reproduce: python -m model.simulate {_replay_args(result)}")
    else:
        out.append("  invariants: all held")
    return "\n".join(out) + "\n"


def render_json(result: Result) -> str:
    s, c = result.settings, result.settings.config
    document = {
        "scenario": result.scenario,
        "seed": result.seed,
        "settings": {
            "nodes": s.nodes,
            "duration_s": s.duration_s,
            "dcs": s.dcs_kind,
            "watchdog": s.watchdog,
            "ttl_s": c.ttl_s,
            "loop_wait_s": c.loop_wait_s,
            "retry_timeout_s": c.retry_timeout_s,
            "maximum_lag_on_failover_bytes": c.maximum_lag_on_failover_bytes,
            "synchronous_mode": c.synchronous_mode,
            "failsafe_mode": c.failsafe_mode,
            "failsafe_unaware": s.failsafe_unaware,
        },
        "events": result.world.trace.events,
        "summary": result.summary,
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def swimlane_trace(result: Result) -> dict[str, Any]:
    trace, s = result.world.trace, result.settings
    title = (
        f"{result.scenario} · seed {result.seed} · {s.nodes} nodes · {s.dcs_kind} · ttl {s.config.ttl_s:g} s"
        f" · watchdog {'on' if s.watchdog else 'off'}{' · failsafe on' if s.config.failsafe_mode else ''}"
    )
    return {
        "title": title,
        "duration": result.world.t,
        "nodes": trace.nodes,
        **trace.timelines(result.world.t),
    }


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the scenarios, one line each")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="leader-crash")
    parser.add_argument("--seed", type=int, help="default: the scenario's own (1, or the seed a regression found)")
    parser.add_argument("--nodes", type=int, default=3, choices=range(2, 10), metavar="{2..9}")
    parser.add_argument("--duration", type=float, default=600.0, help="simulated seconds (default 600)")
    parser.add_argument("--ttl", type=float, default=ClusterConfig.ttl_s)
    parser.add_argument("--loop-wait", type=float, default=ClusterConfig.loop_wait_s)
    parser.add_argument("--retry-timeout", type=float, default=ClusterConfig.retry_timeout_s)
    parser.add_argument("--safety-margin", type=float, default=ClusterConfig.safety_margin_s)
    parser.add_argument(
        "--max-lag",
        type=int,
        default=ClusterConfig.maximum_lag_on_failover_bytes,
        help="maximum_lag_on_failover in bytes",
    )
    parser.add_argument("--sync", action="store_true", help="synchronous_mode on")
    parser.add_argument("--failsafe", action="store_true", help="failsafe_mode on")
    parser.add_argument(
        "--failsafe-unsafe",
        metavar="NODE",
        help="failsafe_mode on, and NODE runs an agent older than it: left out of the failsafe key, it races as ever",
    )
    parser.add_argument("--dcs", choices=["etcd", "zookeeper"], default="etcd")
    parser.add_argument("--no-watchdog", action="store_true", help="run without the watchdog fence")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--svg", metavar="FILE", help="also draw the run as swimlanes into FILE")
    parser.add_argument("--runs", type=int, default=1, help="run K seeds from --seed on and print a summary table")
    parser.add_argument(
        "--schedule",
        metavar="AT:KIND:TARGET[:DURATION[:VALUE]],...",
        help="run this fault schedule instead of a named scenario (heal at half the duration)",
    )
    return parser


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    try:
        config = ClusterConfig(
            ttl_s=args.ttl,
            loop_wait_s=args.loop_wait,
            retry_timeout_s=args.retry_timeout,
            safety_margin_s=args.safety_margin,
            maximum_lag_on_failover_bytes=args.max_lag,
            synchronous_mode=args.sync,
            failsafe_mode=args.failsafe or args.failsafe_unsafe is not None,
        )
    except InvalidObservation as error:
        parser.error(str(error))
    if args.failsafe_unsafe is not None and args.failsafe_unsafe not in [f"n{i}" for i in range(args.nodes)]:
        parser.error(f"--failsafe-unsafe {args.failsafe_unsafe}: no such node (n0 .. n{args.nodes - 1})")
    problems = lease_timing_problems(config)
    if problems:
        parser.error("; ".join(problems))
    if args.duration < 240:
        parser.error("--duration must be at least 240 s: faults start at 60 s and heal at half the duration")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return Settings(
        nodes=args.nodes,
        duration_s=args.duration,
        config=config,
        dcs_kind=args.dcs,
        watchdog=not args.no_watchdog,
        failsafe_unaware=args.failsafe_unsafe,
    )


def _custom(schedule: str, parser: argparse.ArgumentParser) -> Scenario:
    """A scenario from `--schedule`, e.g. "60:pause:n0:90,120:crash:leader" (the explorer prints these)."""
    faults = []
    for item in filter(None, schedule.split(",")):
        parts = item.split(":")
        if len(parts) < 3:
            parser.error(
                f"bad --schedule item {item!r}: want AT:KIND:TARGET[:DURATION[:VALUE]], KIND one of {', '.join(KINDS)}"
            )
        try:
            duration = float(parts[3]) if len(parts) > 3 and parts[3] else None
            value = float(parts[4]) if len(parts) > 4 else 0.0
            faults.append(Fault(float(parts[0]), parts[1], parts[2], duration, value))
        except ValueError as error:
            parser.error(f"bad --schedule item {item!r}: {error}")

    def schedule_with_heal(duration: float, ttl: float, rng: object) -> list[Fault]:
        return [*faults, Fault(heal_at(duration), "heal", "all")]

    return Scenario("custom", schedule, schedule_with_heal)


def _campaign(scenario: Scenario, settings: Settings, first_seed: int, runs: int) -> int:
    results = []
    for i, seed in enumerate(range(first_seed, first_seed + runs), 1):
        results.append(simulate(scenario, settings, seed))
        filled = 30 * i // runs
        print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {i}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    failed = [r for r in results if not r.ok]
    failovers = sorted(f["duration_s"] for r in results for f in r.summary["failovers"])
    print(f"# {runs} runs of {scenario.name} from seed {first_seed}")
    print(
        f"{'runs':>6} {'violations':>10} {'failovers':>9} {'failover p50 s':>14} {'failover max s':>14} "
        f"{'unavail mean s':>14} {'tx lost':>7}"
    )
    p50 = failovers[len(failovers) // 2] if failovers else 0.0
    worst = failovers[-1] if failovers else 0.0
    mean_down = sum(r.summary["unavailable_s"] for r in results) / runs
    lost = sum(r.summary["acked_lost_tx"] for r in results)
    print(f"{runs:>6} {len(failed):>10} {len(failovers):>9} {p50:>14.3f} {worst:>14.3f} {mean_down:>14.3f} {lost:>7}")
    for r in failed:
        v = r.summary["violations"][0]
        print(f"seed {r.seed}: {v['invariant']} at {v['t']:.3f} s: {v['detail']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, SCENARIOS))
        for name, scenario in SCENARIOS.items():
            print(f"{name:<{width}}  {scenario.summary}")
        return 0
    settings = settings_from(args, parser)
    scenario = SCENARIOS[args.scenario] if args.schedule is None else _custom(args.schedule, parser)
    seed = scenario.seed if args.seed is None else args.seed
    if args.runs > 1:
        return _campaign(scenario, settings, seed, args.runs)
    result = simulate(scenario, settings, seed)
    sys.stdout.write(render_json(result) if args.format == "json" else render_text(result))
    if args.svg:
        with open(args.svg, "w") as svg:
            svg.write(render_swimlanes(swimlane_trace(result)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
