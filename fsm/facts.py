"""Facts: the named booleans the rule table's guards test, derived once per observation.

Each fact comes with a note that states the values behind it (`lag 18874368 B > maximum_lag_on_failover
1048576 B`); a decision's `why` is made of the notes of the guards of the rule that fired. A guard names a
fact, never a threshold: thresholds live here, next to the sentence that reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fsm.lease import lease_deadline_s
from fsm.observation import (
    ClusterView,
    DataDir,
    Member,
    Observation,
    OperatorRequest,
    RequestKind,
    slot_name,
)
from fsm.topology import clone_source_of, slot_holders, upstream_of

# A scheduled restart or switchover missed by more than this many loop_waits is dropped, not run late (Patroni's
# rule: an agent that stalled that long should not restart or hand over on its own once it comes back).
MISSED_AFTER_LOOPS = 1.5

# What each fact means; the keys are the only names a guard may use.
FACT_DOCS: dict[str, str] = {
    "paused": "the cluster is in maintenance mode (config pause)",
    "dcs_reachable": "the DCS answered this loop's read",
    "holds_leader_key": "the leader key names this node",
    "leader_key_free": "the DCS answered and there is no leader key",
    "leader_key_held_by_other": "the leader key names another member",
    "leader_running": "the leader key names another member whose member key says running",
    "lease_valid": "this node renewed the key and its own lease deadline has not passed",
    "lease_outlasts_retry": "a renew attempt and the read after it (2 x retry_timeout) end before the lease deadline",
    "cluster_initialized": "the initialize key holds a system identifier",
    "init_key_free": "the DCS answered and nobody has claimed the initialize key",
    "initialize_unset": "the initialize key is claimed but holds no system identifier yet",
    "won_initialize_race": "last loop's RaceForInitialize created the initialize key",
    "data_dir_usable": "the data directory holds a valid cluster",
    "data_dir_foreign": "the data directory's system identifier differs from the initialize key",
    "postgres_running": "local Postgres is running",
    "writable": "local Postgres accepts writes (running, not in recovery, not fenced read-only)",
    "following_upstream": "local Postgres is a standby streaming from its upstream: the leader-key holder, or the "
    "replica its replicatefrom tag names (nobody with nostream)",
    "cascade_slots_stale": "this standby's replication slots differ from those of the members that stream from it "
    "(use_slots on)",
    "diverged": "this node has WAL past the point where its timeline ended in the cluster's (or leader's) history",
    "parameters_stale": "Postgres runs without the cluster-wide postgresql.parameters, pg_hba or use_slots the DCS "
    "config key holds now",
    "rewind_possible": "pg_rewind can run (checksums or wal_log_hints) and did not fail last loop",
    "restart_budget_spent": "the crashed primary failed to start, or stayed down past primary_start_timeout",
    "nofailover": "this node's tags forbid promoting it (nofailover, or failover_priority 0)",
    "eligible": "this node may be promoted: tags allow it, Postgres runs, lag within limit, sync allows, on the "
    "cluster's newest timeline and not forked from it, listed in the failsafe key when failsafe mode lists anyone",
    "first_in_line": "a switchover names this node, or no promotable member is ahead of it",
    "switchover_requested": "a switchover away from this leader names a fit target (or any fit member exists)",
    "switchover_stale": "a failover key exists that this leader will not act on (done, not for it, unfit, or "
    "scheduled at a time that cannot be read or was missed)",
    "switchover_scheduled": "a switchover away from this leader is scheduled for a time still ahead",
    "synchronous_mode": "the cluster runs in synchronous mode (config synchronous_mode)",
    "sync_standby_stale": "the sync key (or synchronous_standby_names) does not name the standby synchronous "
    "replication should use, or the key is not this leader's",
    "history_behind": "this leader's timeline history has switches the DCS history lacks",
    "use_slots": "the leader keeps a replication slot per member",
    "restart_requested": "an operator asked to restart Postgres, and the request's conditions (role, "
    "restart_pending) hold",
    "reinit_requested": "an operator asked to re-clone this node from the leader",
    "request_refused": "an operator request this node cannot honour (a reinitialize of the leader or with no "
    "running leader, a restart whose role or restart_pending does not hold, a scheduled restart missed by more "
    "than 1.5 x loop_wait)",
    "scheduled_restart_due": "the operator's scheduled restart is the request this turn answers: its time has come",
    "failsafe_stale": "failsafe mode is on and the failsafe key differs from the members this leader sees",
    "in_failsafe_view": "failsafe mode is on and the failsafe key as last read lists this node",
    "failsafe_refused": "last loop's ConfirmFailsafe failed: a member of the failsafe key did not accept",
    "failsafe_active": "the lease was last extended by the failsafe members' word, not by renewing the key",
    "failsafe_leader_alive": "failsafe mode is on and another member's POST /failsafe was accepted less than ttl ago",
    "peer_runs_primary": "another member's REST API answered this turn that it runs as a primary",
}


def due(at_s: float | None, now_s: float) -> bool:
    """Whether a scheduled time (on the driver's monotonic clock) has come; an unknown time never comes."""
    return at_s is not None and now_s >= at_s


def missed(at_s: float, now_s: float, loop_wait_s: float) -> float | None:
    """How late a due scheduled action is if it is too late to run (past MISSED_AFTER_LOOPS x loop_wait), else None."""
    late = now_s - at_s
    return late if late > MISSED_AFTER_LOOPS * loop_wait_s else None


def answered_request(obs: Observation) -> OperatorRequest | None:
    """The operator request this turn answers: an immediate one, else a scheduled restart whose time has come."""
    scheduled = obs.agent.scheduled
    if obs.agent.request is not None:
        return obs.agent.request
    return scheduled if scheduled is not None and due(scheduled.at_s, obs.now_s) else None


@dataclass(frozen=True)
class Facts:
    """The facts of one observation, their notes, and the values the actions are planned from."""

    observation: Observation
    truth: dict[str, bool]
    notes: dict[str, str]
    leader: str | None  # the leader-key holder
    best_sync_standby: str | None  # whom SetSyncStandby names (None: nobody)
    request: OperatorRequest | None = None  # the operator request this turn answers (`answered_request`)
    clone_source: str | None = None  # whom a clone copies: a running replica tagged clonefrom, else the leader
    upstream: str | None = None  # whom a standby streams from (`upstream_of`)
    failsafe_members: tuple[tuple[str, str], ...] = ()  # what the failsafe key should hold (`PublishFailsafe`)

    def explain(self, name: str) -> str:
        return f"{name}={'yes' if self.truth[name] else 'no'} ({self.notes[name]})"


def _lag_note(lag_bytes: int | None, limit: int) -> tuple[bool, str]:
    if lag_bytes is None:
        return True, "leader WAL position unknown: no lag to hold against"
    if lag_bytes <= limit:
        return True, f"lag {lag_bytes} B <= maximum_lag_on_failover {limit} B"
    return False, f"lag {lag_bytes} B > maximum_lag_on_failover {limit} B"


def _lag_bytes(view: ClusterView | None, wal_position: int) -> int | None:
    if view is None or view.leader_wal_position is None:
        return None
    return max(0, view.leader_wal_position - wal_position)


class _Sheet:
    """Collects (truth, note) pairs under fact names."""

    def __init__(self) -> None:
        self.truth: dict[str, bool] = {}
        self.notes: dict[str, str] = {}

    def add(self, name: str, value: bool, note: str) -> None:
        self.truth[name] = value
        self.notes[name] = note


def derive_facts(obs: Observation) -> Facts:
    """Every fact of `FACT_DOCS`, computed once from `obs`."""
    sheet = _Sheet()
    view, _pg, cfg, me = obs.dcs, obs.postgres, obs.config, obs.name
    leader = view.leader.holder if view and view.leader else None
    leader_member = view.member(leader) if view else None

    sheet.add("paused", cfg.pause, "pause is set" if cfg.pause else "pause is off")
    sheet.add("dcs_reachable", view is not None, "DCS answered" if view else "DCS unreachable")
    sheet.add("holds_leader_key", leader == me, f"leader key holder: {leader or 'none'}")
    sheet.add("leader_key_free", view is not None and leader is None, f"leader key holder: {leader or 'none'}")
    sheet.add("leader_key_held_by_other", leader not in (None, me), f"leader key holder: {leader or 'none'}")
    leader_up = leader not in (None, me) and leader_member is not None and leader_member.running
    state = leader_member.state if leader_member else "no member key"
    sheet.add("leader_running", leader_up, f"leader {leader or 'none'}: {state}")
    _lease_facts(sheet, obs)
    _bootstrap_facts(sheet, obs)
    upstream = upstream_of(me, obs.agent.tags, view, leader)
    _postgres_facts(sheet, obs, leader, leader_member, upstream)
    _election_facts(sheet, obs)
    best_sync = _leader_facts(sheet, obs)
    _request_facts(sheet, obs, leader_up)
    sync_on = cfg.synchronous_mode
    sheet.add("synchronous_mode", sync_on, "synchronous_mode is on" if sync_on else "synchronous_mode is off")
    sheet.add("use_slots", cfg.use_slots, "use_slots is on" if cfg.use_slots else "use_slots is off")
    members = _failsafe_facts(sheet, obs)
    request = answered_request(obs)
    clone_source = clone_source_of(obs, leader, request)
    return Facts(obs, sheet.truth, sheet.notes, leader, best_sync, request, clone_source, upstream, members)


def _failsafe_facts(sheet: _Sheet, obs: Observation) -> tuple[tuple[str, str], ...]:
    """Patroni's failsafe mode; returns what the failsafe key should hold (every member with a REST API)."""
    on, view, agent, me = obs.config.failsafe_mode, obs.dcs, obs.agent, obs.name
    members = tuple(sorted((m.name, m.api_url) for m in view.members if m.api_url)) if view else ()
    stored = view.failsafe if view else None
    stale = on and view is not None and stored != members
    sheet.add("failsafe_stale", stale, f"failsafe key {_names(stored)}, members {_names(members)}")
    listed = on and me in dict(agent.failsafe_view or ())
    sheet.add("in_failsafe_view", listed, f"failsafe key as last read: {_names(agent.failsafe_view)}")
    refused = "ConfirmFailsafe" in agent.last_outcome.failed
    sheet.add("failsafe_refused", refused, "a member did not accept" if refused else "no refusal last loop")
    active = agent.failsafe_active
    sheet.add("failsafe_active", active, "lease held by the failsafe members" if active else "lease held by the key")
    ping = agent.failsafe_ping
    alive = on and ping is not None and ping.leader != me and obs.now_s - ping.at_s < obs.config.ttl_s
    heard = f"{ping.leader} pinged {obs.now_s - ping.at_s:g} s ago (ttl {obs.config.ttl_s:g} s)" if ping else "no ping"
    sheet.add("failsafe_leader_alive", alive, heard)
    primaries = sorted(view.live_primaries - {me}) if view else []
    sheet.add("peer_runs_primary", bool(primaries), f"answered as primary: {', '.join(primaries) or 'nobody'}")
    return members


def _names(view: tuple[tuple[str, str], ...] | None) -> str:
    return "absent" if view is None else "[" + ", ".join(name for name, _ in view) + "]"


def failsafe_unlisted(obs: Observation, name: str) -> bool:
    """Failsafe mode is on and the failsafe key lists members but not `name`: it may not race (Patroni's rule, so
    that a leader that reached every listed member keeps the only right to lead)."""
    failsafe = obs.dcs.failsafe if obs.dcs else None
    return obs.config.failsafe_mode and bool(failsafe) and name not in dict(failsafe or ())


def _request_facts(sheet: _Sheet, obs: Observation, leader_running: bool) -> None:
    request, scheduled = answered_request(obs), obs.agent.scheduled
    is_scheduled = request is not None and request.at_s is not None
    if scheduled is None:
        waiting = "no scheduled restart"
    else:
        waiting = f"restart scheduled at {scheduled.at_s:g} s, now {obs.now_s:g} s"
        if obs.agent.request is not None:
            waiting += f"; the {obs.agent.request.kind.value} requested now goes first"
    sheet.add("scheduled_restart_due", is_scheduled, waiting)
    if request is None:
        for name in ("restart_requested", "reinit_requested", "request_refused"):
            sheet.add(name, False, "no operator request")
        return
    holder = obs.dcs is not None and obs.dcs.leader is not None and obs.dcs.leader.holder == obs.name
    role = "primary" if holder else "replica"
    refusal = None
    late = missed(request.at_s, obs.now_s, obs.config.loop_wait_s) if request.at_s is not None else None
    if late is not None:
        refusal = f"the scheduled restart missed its time by {late:g} s (> 1.5 x loop_wait): dropped"
    elif request.kind is RequestKind.REINITIALIZE:
        if holder:
            refusal = "this node is the leader: only a replica can be reinitialized"
        elif not leader_running:
            refusal = "no running leader to clone from"
    elif request.role not in (None, role):
        refusal = f"restart is for a {request.role}, this node is a {role}"
    elif request.restart_pending and not obs.postgres.pending_restart:
        refusal = "restart_pending: no setting waits for a restart"
    asked = f"{request.kind.value} {'scheduled' if is_scheduled else 'requested'}"
    sheet.add("request_refused", refusal is not None, refusal or f"{asked}: its conditions hold")
    restart = request.kind is RequestKind.RESTART and refusal is None
    sheet.add("restart_requested", restart, asked)
    sheet.add("reinit_requested", request.kind is RequestKind.REINITIALIZE and refusal is None, asked)


def _lease_facts(sheet: _Sheet, obs: Observation) -> None:
    deadline = lease_deadline_s(obs.agent.lease_renewed_at_s, obs.config, obs.agent.lease_ttl_s)
    if deadline is None:
        sheet.add("lease_valid", False, "never renewed the leader key")
        sheet.add("lease_outlasts_retry", False, "never renewed the leader key")
        return
    valid = obs.now_s < deadline
    sheet.add("lease_valid", valid, f"now {obs.now_s:g} s {'<' if valid else '>='} lease deadline {deadline:g} s")
    # Another renew attempt, and the DCS read of the decision after it if that attempt fails, each take up to
    # retry_timeout: only if both end before the deadline does the leader keep writing while it retries; else it
    # goes read-only now, gracefully, rather than be stopped at the deadline (its requests and its sleep end there:
    # `fsm.node.wake_by_s`, `operation_deadline_s`), which it would be all the same, in time.
    retry_end = obs.now_s + 2 * obs.config.retry_timeout_s
    outlasts = retry_end < deadline
    sheet.add(
        "lease_outlasts_retry",
        outlasts,
        f"now + 2 x retry_timeout = {retry_end:g} s {'<' if outlasts else '>='} lease deadline {deadline:g} s",
    )


def _bootstrap_facts(sheet: _Sheet, obs: Observation) -> None:
    view, pg = obs.dcs, obs.postgres
    init = view.initialize if view else None
    shown = "unknown (DCS unreachable)" if view is None else repr(init) if init is not None else "absent"
    sheet.add("cluster_initialized", bool(init), f"initialize key: {shown}")
    sheet.add("init_key_free", view is not None and init is None, f"initialize key: {shown}")
    sheet.add("initialize_unset", init == "", f"initialize key: {shown}")
    won = "RaceForInitialize" in obs.agent.last_outcome.succeeded
    sheet.add("won_initialize_race", won, "created the initialize key" if won else "did not create it last loop")
    sheet.add("data_dir_usable", pg.data_dir is DataDir.VALID, f"data directory {pg.data_dir.value}")
    foreign = pg.data_dir is DataDir.VALID and bool(init) and pg.system_identifier != init
    sheet.add("data_dir_foreign", foreign, f"system id {pg.system_identifier or 'none'}, cluster {shown}")


def _postgres_facts(
    sheet: _Sheet, obs: Observation, leader: str | None, leader_member: Member | None, upstream: str | None
) -> None:
    pg, agent, cfg = obs.postgres, obs.agent, obs.config
    sheet.add("postgres_running", pg.running, "running" if pg.running else "not running")
    role = "standby" if pg.in_recovery else "read-only primary" if pg.read_only else "primary"
    sheet.add("writable", pg.writable, f"Postgres {'running as ' + role if pg.running else 'not running'}")
    streams = pg.running and pg.in_recovery and pg.following == upstream
    follows = streams and (upstream is not None or agent.tags.nostream)  # without a leader, no upstream to follow
    wanted = "nobody (nostream)" if agent.tags.nostream else upstream or "none (no leader)"
    sheet.add("following_upstream", follows, f"streams from {pg.following or 'nobody'}, upstream {wanted}")
    slots = frozenset(slot_name(member) for member in slot_holders(obs.name, obs.dcs, leader))
    stale = cfg.use_slots and pg.running and pg.in_recovery and pg.replication_slots != slots
    shown = ", ".join(sorted(pg.replication_slots)) or "none"
    sheet.add("cascade_slots_stale", stale, f"slots {shown}; {', '.join(sorted(slots)) or 'none'} stream from here")
    sheet.add("diverged", *_divergence(obs, leader, leader_member))
    failed = agent.last_outcome.failed
    rewind_ok = cfg.use_pg_rewind and pg.can_rewind and "RewindFromLeader" not in failed
    why = (
        "use_pg_rewind is off"
        if not cfg.use_pg_rewind
        else "pg_rewind failed last loop"
        if "RewindFromLeader" in failed
        else ("checksums or wal_log_hints on" if pg.can_rewind else "neither checksums nor wal_log_hints")
    )
    sheet.add("rewind_possible", rewind_ok, why)
    given = (pg.cluster_parameters, pg.cluster_pg_hba, pg.cluster_use_slots)
    stale = pg.running and (cfg.parameters, cfg.pg_hba, cfg.use_slots) != given
    shown = ", ".join(f"{name}={value}" for name, value in cfg.parameters) or "none"
    hba = f", {len(cfg.pg_hba)} pg_hba line{'' if len(cfg.pg_hba) == 1 else 's'}" if cfg.pg_hba else ""
    sheet.add("parameters_stale", stale, f"cluster-wide parameters {shown}{hba}; {'not ' if stale else ''}applied")
    down_since = agent.postgres_down_since_s
    down_s = None if down_since is None else obs.now_s - down_since
    if "StartPrimary" in failed:
        spent, why = True, "the restart of the primary failed"
    elif down_s is not None and down_s >= cfg.primary_start_timeout_s:
        spent, why = True, f"down {down_s:g} s >= primary_start_timeout {cfg.primary_start_timeout_s:g} s"
    else:
        spent, limit = False, cfg.primary_start_timeout_s
        why = "Postgres up" if down_s is None else f"down {down_s:g} s < primary_start_timeout {limit:g} s"
    sheet.add("restart_budget_spent", spent, why)


def _divergence(obs: Observation, leader: str | None, leader_member: Member | None) -> tuple[bool, str]:
    """pg_rewind's question: has this node WAL past the end of its timeline in the cluster's history?

    Positions on diverged timelines cannot be compared, so such a node is neither promoted nor streamed to
    until pg_rewind (or a re-clone) puts it back on the cluster's history. Without the history published yet
    the answer is no: wait for it rather than rewind on a guess."""
    pg, view = obs.postgres, obs.dcs
    if view is None or pg.data_dir is not DataDir.VALID:
        return False, "no history to compare with"
    mine = pg.timeline
    if leader_member is not None and leader not in (None, obs.name) and mine > leader_member.timeline:
        return True, f"my timeline {mine} is ahead of leader timeline {leader_member.timeline}"
    return _past_fork(mine, pg.wal_position, view)


def _latest_timeline(view: ClusterView | None) -> int:
    """The newest timeline the cluster is known to have. Promoting a node still on an older one would fork a
    second timeline of the same number, which Postgres could not tell apart from the first."""
    if view is None:
        return 1
    return max([h.timeline + 1 for h in view.history] + [m.timeline for m in view.members], default=1)


def _past_fork(timeline: int, position: int, view: ClusterView) -> tuple[bool, str]:
    fork = next((h for h in view.history if h.timeline == timeline), None)
    if fork is None:
        return False, f"the cluster's history has no switch from timeline {timeline}"
    if position > fork.switch_lsn:
        return True, f"my WAL {position} is past the end of timeline {timeline} at {fork.switch_lsn}"
    return False, f"my WAL {position} <= end of timeline {timeline} at {fork.switch_lsn}"


def _sync_allows(obs: Observation, name: str) -> tuple[bool, str]:
    """In synchronous mode only the members the `sync` key names may be promoted: its standby, or the leader that
    wrote it. A key that names no standby (the leader ran without one) therefore blocks every other member, as in
    Patroni: they may miss commits the leader acknowledged alone. No key, or one naming no leader: nobody ever was
    synchronous, anyone may."""
    sync = obs.dcs.sync if obs.dcs else None
    if not obs.config.synchronous_mode or sync is None or sync.leader is None:
        return True, "no synchronous standby recorded"
    allowed = sorted({sync.leader, sync.sync_standby} - {None})
    return name in allowed, f"synchronous_mode: the sync key allows only {' and '.join(allowed)}"


def _promotable(obs: Observation) -> Callable[[Member], bool]:
    """Whether another member may be promoted, judged from what it published."""
    view, cfg = obs.dcs, obs.config

    def check(member: Member) -> bool:
        if member.role != "replica" or not member.running or not member.tags.may_promote:
            return False
        if failsafe_unlisted(obs, member.name):  # it may not race: no switchover to it, nobody waits for it
            return False
        if not _sync_allows(obs, member.name)[0]:
            return False
        if view is not None and _past_fork(member.timeline, member.wal_position, view)[0]:
            return False
        if member.timeline < _latest_timeline(view):
            return False
        return _lag_note(_lag_bytes(view, member.wal_position), cfg.maximum_lag_on_failover_bytes)[0]

    return check


def _election_facts(sheet: _Sheet, obs: Observation) -> None:
    view, pg, cfg, tags, me = obs.dcs, obs.postgres, obs.config, obs.agent.tags, obs.name
    no_fo = not tags.may_promote
    tag_note = "tag nofailover" if tags.nofailover else f"failover_priority {tags.failover_priority}"
    sheet.add("nofailover", no_fo, tag_note)
    lag_ok, lag_note = _lag_note(_lag_bytes(view, pg.wal_position), cfg.maximum_lag_on_failover_bytes)
    sync_ok, sync_note = _sync_allows(obs, me)
    diverged, diverged_note = _past_fork(pg.timeline, pg.wal_position, view) if view else (False, "")
    latest = _latest_timeline(view)
    blockers = [
        reason
        for ok, reason in (
            (not no_fo, "tags forbid promotion"),
            (pg.data_dir is DataDir.VALID, f"data directory {pg.data_dir.value}"),
            (pg.running, "Postgres not running"),
            (lag_ok, lag_note),
            (sync_ok, sync_note),
            (not diverged, f"history forked: {diverged_note}"),
            (pg.timeline >= latest, f"timeline {pg.timeline} is behind the cluster's timeline {latest}"),
            (not failsafe_unlisted(obs, me), "failsafe mode: the failsafe key does not list me"),
        )
        if not ok
    ]
    sheet.add("eligible", not blockers, "; ".join(blockers) if blockers else lag_note)

    promotable = _promotable(obs)
    members = view.members if view else ()
    request = view.failover if view else None
    target = view.member(request.candidate) if view and request and request.candidate else None
    if target is not None and promotable(target):
        sheet.add("first_in_line", target.name == me, f"a failover request names {target.name}")
        return
    position = pg.wal_position
    ahead = [
        m
        for m in members
        if m.name != me
        and promotable(m)
        and (m.wal_position, m.tags.failover_priority) > (position, tags.failover_priority)
    ]
    if ahead:
        best = max(ahead, key=lambda m: (m.wal_position, m.tags.failover_priority))
        sheet.add("first_in_line", False, f"{best.name} is ahead (WAL {best.wal_position} vs my {position})")
    else:
        sheet.add("first_in_line", True, f"no promotable member ahead of my WAL {position}")


def _leader_facts(sheet: _Sheet, obs: Observation) -> str | None:
    """Facts a leader acts on; returns the standby synchronous replication should use."""
    view, pg = obs.dcs, obs.postgres
    _switchover_facts(sheet, obs)

    best = _best_sync_standby(obs)
    sheet.add("sync_standby_stale", *_sync_stale(obs, best))

    published = max((h.timeline for h in view.history), default=0) if view else 0
    local = max((h.timeline for h in pg.timeline_history), default=0)
    sheet.add("history_behind", local > published, f"local history to timeline {local}, DCS to {published}")
    return best


def _switchover_facts(sheet: _Sheet, obs: Observation) -> None:
    """Whether this leader hands over now (`switchover_requested`), keeps a failover key for later
    (`switchover_scheduled`) or clears it (`switchover_stale`)."""
    view, me = obs.dcs, obs.name
    request = view.failover if view else None
    promotable, members = _promotable(obs), view.members if view else ()
    if request is None:
        requested, stale, scheduled, why = False, False, False, "no failover key"
    elif request.leader not in (None, me) or request.candidate == me:
        requested, stale, scheduled = False, True, False
        why = f"failover key {request.leader} -> {request.candidate}: done or not addressed to this leader"
    elif (later := _switchover_later(obs)) is not None:
        why, dropped = later
        requested, stale, scheduled = False, dropped, not dropped
    else:
        if request.candidate is not None:
            target = view.member(request.candidate) if view else None
            fit = target is not None and promotable(target)
            why = f"target {request.candidate} is {'fit' if fit else 'missing, lagging, not running or not allowed'}"
        else:
            fit = any(promotable(m) for m in members if m.name != me)
            why = "a fit member exists" if fit else "no member is fit to take over"
        requested, stale, scheduled = fit, not fit, False
    sheet.add("switchover_requested", requested, why)
    sheet.add("switchover_stale", stale, why)
    sheet.add("switchover_scheduled", scheduled, why)


def _switchover_later(obs: Observation) -> tuple[str, bool] | None:
    """For a scheduled failover key that is not to be carried out now: why, and whether it is to be dropped (its
    time could not be read, or was missed by more than 1.5 x loop_wait). None: no such key, or its time has come."""
    request = obs.dcs.failover if obs.dcs else None
    if request is None or not request.scheduled:
        return None
    shown = request.scheduled_at or "?"
    if request.due_s is None:
        return f"scheduled_at {shown!r} is not a time with a zone", True
    if not due(request.due_s, obs.now_s):
        return f"switchover scheduled at {shown}: due at {request.due_s:g} s, now {obs.now_s:g} s", False
    late = missed(request.due_s, obs.now_s, obs.config.loop_wait_s)
    if late is not None:
        return f"switchover scheduled at {shown} missed by {late:g} s (> 1.5 x loop_wait)", True
    return None


def _best_sync_standby(obs: Observation) -> str | None:
    """Whom synchronous replication should use: the key's standby while it streams (by its member key, or by
    Postgres itself holding it in sync state while its member key is briefly missing, as after a DCS outage), else
    the streaming member Postgres already holds in sync state, else the one furthest ahead (ties by name). None
    outside sync mode."""
    view, pg = obs.dcs, obs.postgres
    if not obs.config.synchronous_mode or view is None:
        return None
    current = view.sync.sync_standby if view.sync else None
    candidates = sorted(
        (m for m in view.members if m.name in pg.streaming_replicas and m.running and not m.tags.nosync),
        key=lambda m: (m.name not in pg.sync_replicas, -m.wal_position, m.name),
    )
    names = [m.name for m in candidates]
    published = view.member(current)
    still_sync = current in pg.sync_replicas and (published is None or not published.tags.nosync)
    return current if current in names or still_sync else (names[0] if names else None)


def _sync_stale(obs: Observation, best: str | None) -> tuple[bool, str]:
    """Do the sync key, synchronous_standby_names and the replication state disagree with `best`?

    In synchronous mode the key must be this leader's and name `best`, and a running primary's setting must name
    exactly the key's standby: a setting without it acknowledges commits the key's standby may lack (and the key
    lets that standby be promoted); a setting naming another makes commits wait for a member the key does not
    trust. Outside synchronous mode any key naming a standby is stale."""
    view, pg, me = obs.dcs, obs.postgres, obs.name
    key = view.sync if view else None
    current = key.sync_standby if key else None
    if not obs.config.synchronous_mode:
        return current is not None, f"synchronous_mode off, sync key names {current or 'nobody'}"
    owner = key.leader if key else None
    setting = pg.synchronous_standby_names
    primary = pg.running and not pg.in_recovery
    expected = frozenset({current} - {None})
    shown = ",".join(sorted(setting)) or "''"
    why = (
        f"sync key {owner or 'none'} -> {current or 'nobody'}, synchronous_standby_names {shown}, "
        f"in sync state {sorted(pg.sync_replicas) or 'none'}, best {best or 'nobody'}"
    )
    stale = owner != me or best != current or (primary and setting != expected)
    return stale, why
