"""The node's own configuration files, kept in `settings.own_dir`, outside the data directory.

pg_basebackup and pg_rewind copy the source's postgresql.conf and postgresql.auto.conf into the data directory, so
nothing node-specific may live there: Postgres starts with `-c config_file=<own_dir>/postgresql.conf`, and that file
names the data directory, this node's pg_hba.conf and pg_ident.conf, port, listen addresses, socket directory,
primary_conninfo and slot. Keys of the data directory's postgresql.auto.conf that would override those (it is read
after our file) are removed before every start and after every clone or rewind.

What changes at run time (the upstream a standby follows, the synchronous standby) is kept in the first line of our
postgresql.conf as JSON, so that a restarted agent reads back what the running server was told.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .runas import Runner
from .settings import PostgresSettings
from .values import ClusterSettings, Upstream, slot_name

STATE_MARK = "# regent-state: "
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

# Defaults a node needs for replication and pg_rewind; `parameters` may override them.
DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("wal_level", "replica"),
    ("hot_standby", True),
    ("wal_log_hints", True),  # pg_rewind needs it when the cluster has no data checksums
    ("max_wal_senders", 10),
    ("max_replication_slots", 10),
)

# Set by our file only: a copy of another node's postgresql.auto.conf must not override them.
NODE_KEYS = frozenset(
    {
        "data_directory",
        "config_file",
        "hba_file",
        "ident_file",
        "port",
        "listen_addresses",
        "unix_socket_directories",
        "cluster_name",
        "primary_conninfo",
        "primary_slot_name",
        "synchronous_standby_names",
    }
)


class ConfError(ValueError):
    """A setting cannot be written into postgresql.conf (a name Postgres could never accept)."""


@dataclass(frozen=True)
class NodeState:
    """What the agent told this node at run time."""

    upstream: Upstream | None = None  # the member a standby streams from (None: a primary, or a standby of nobody)
    sync_standby: str | None = None  # synchronous_standby_names, on a primary
    raised: tuple[tuple[str, int], ...] = ()  # settings a standby runs with above its own, up to its primary's


def conf_value(value: Any) -> str:
    """A postgresql.conf value: booleans as on/off, numbers bare, anything else a quoted string."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("'", "''")
    return f"'{text}'"


def conninfo_value(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def conninfo(**keys: object) -> str:
    """A libpq key=value connection string, every value quoted."""
    return " ".join(f"{key}={conninfo_value(value)}" for key, value in keys.items() if value is not None)


def pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class OwnFiles:
    """Paths and contents of the node's own files; written as the OS user, atomically."""

    def __init__(self, settings: PostgresSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        own = settings.own_dir
        self.dir = own
        self.conf = own / "postgresql.conf"
        self.hba = own / "pg_hba.conf"
        self.ident = own / "pg_ident.conf"
        self.pgpass = settings.pgpass_file  # Runner's PGPASSFILE names it too
        self.cluster_conf = own / "cluster.conf"  # the DCS config key's postgresql.parameters, included
        self.log = own / "postgresql.log"
        self.socket_dir = own

    # --- run-time state --------------------------------------------------------------------------------

    def read_state(self) -> NodeState:
        try:
            with open(self.conf, encoding="utf-8") as handle:
                first = handle.readline()
        except OSError:
            return NodeState()
        if not first.startswith(STATE_MARK):
            return NodeState()
        try:
            data = json.loads(first[len(STATE_MARK) :])
            up = data.get("upstream")
            upstream = Upstream(str(up["name"]), str(up["host"]), int(up["port"])) if up else None
            sync = data.get("sync_standby")
            raised = tuple((str(name), int(value)) for name, value in data.get("raised", ()))
            return NodeState(upstream, str(sync) if sync else None, raised)
        except (ValueError, KeyError, TypeError):
            return NodeState()

    # --- contents ----------------------------------------------------------------------------------------

    def primary_conninfo(self, upstream: Upstream) -> str:
        s = self.settings
        return conninfo(
            host=upstream.host,
            port=upstream.port,
            user=s.replication.username,
            passfile=self.pgpass,
            application_name=s.name,  # what synchronous_standby_names and pg_stat_replication name
            connect_timeout=5,
        )

    def render_conf(self, state: NodeState) -> str:
        s = self.settings
        lines = [
            STATE_MARK + json.dumps(_state_json(state), sort_keys=True),
            "# Written by Regent for member " + json.dumps(s.name) + "; rewritten at every start: edit the config.",
            "",
            "# defaults for replication and pg_rewind",
        ]
        lines += [_line(name, value) for name, value in DEFAULTS]
        lines += ["", "# the cluster-wide postgresql.parameters (the DCS config key); this member's own come after"]
        lines += [f"include_if_exists {conf_value(str(self.cluster_conf))}"]
        user_sockets = ""
        if s.parameters:
            lines += ["", "# postgresql.parameters"]
            for name, value in s.parameters:
                if name.lower() == "unix_socket_directories":
                    user_sockets = str(value)  # kept, after our own socket directory
                    continue
                lines.append(_line(name, value))
        if s.recovery_conf:
            lines += ["", "# postgresql.recovery_conf"]
            lines += [_line(name, value) for name, value in s.recovery_conf]
        sockets = ", ".join(part for part in (str(self.socket_dir), user_sockets) if part)
        upstream = state.upstream
        node: list[tuple[str, Any]] = [
            ("data_directory", str(s.data_dir)),
            ("hba_file", str(self.hba)),
            ("ident_file", str(self.ident)),
            ("port", s.port),
            ("listen_addresses", ",".join(s.listen_addresses)),
            ("unix_socket_directories", sockets),
            ("cluster_name", s.scope),
            ("primary_conninfo", self.primary_conninfo(upstream) if upstream else ""),
            ("primary_slot_name", slot_name(s.name) if upstream and self.cluster_settings().use_slots else ""),
            ("synchronous_standby_names", _quoted_name(state.sync_standby) if state.sync_standby else ""),
            *state.raised,  # the primary's values, where a standby's settings say less (standby_floors)
        ]
        lines += ["", "# this node's own settings (last, so they win)"]
        lines += [_line(name, value) for name, value in node]
        return "\n".join(lines) + "\n"

    def render_hba(self) -> str:
        s = self.settings
        superuser = _hba_name(s.superuser.username)
        method = "scram-sha-256" if s.superuser.password else "trust"
        lines = [
            "# Written by Regent at every start and cluster-wide change: edit postgresql.pg_hba in the config.",
            "# The agent connects as the superuser over the socket in its own directory (mode 0700: only the",
            "# Postgres OS user and root reach it). First, so that no line below can lock the agent out.",
            f"local all {superuser} {method}",
            f"local replication {superuser} {method}",  # IDENTIFY_SYSTEM: the timeline a standby replays
        ]
        if s.pg_hba is not None:
            lines += ["", "# postgresql.pg_hba of this member's config", *s.pg_hba]
        elif cluster := self.cluster_settings().pg_hba:
            lines += ["", "# postgresql.pg_hba of the DCS config key (edit that: PATCH /config)", *cluster]
        elif s.bootstrap_pg_hba:
            lines += ["", "# bootstrap.pg_hba", *s.bootstrap_pg_hba]
        network = s.replication_network
        lines += [
            "",
            "# standbys stream and clone; pg_rewind on another node reads this one (the superuser or rewind role)",
            f"host replication {_hba_name(s.replication.username)} {network} scram-sha-256",
            f"host all {superuser} {network} scram-sha-256",
        ]
        if s.rewind is not None and s.rewind.username != s.superuser.username:
            lines.append(f"host all {_hba_name(s.rewind.username)} {network} scram-sha-256")
        return "\n".join(lines) + "\n"

    def render_pgpass(self) -> str:
        entries: dict[str, str] = {}
        for credentials in (self.settings.replication, self.settings.superuser, self.settings.rewind):
            if credentials is not None and credentials.password is not None:
                entries.setdefault(credentials.username, credentials.password)
        return "".join(f"*:*:*:{pgpass_field(user)}:{pgpass_field(password)}\n" for user, password in entries.items())

    def read_cluster_settings(self) -> ClusterSettings | None:
        """What cluster.conf was last written from (its first line); None when there is none."""
        try:
            with open(self.cluster_conf, encoding="utf-8") as handle:
                first = handle.readline()
            data = json.loads(first[len(STATE_MARK) :])
            parameters = tuple((str(name), value) for name, value in data["parameters"])
            hba = tuple(str(line) for line in data["pg_hba"])
            return ClusterSettings(parameters, hba, bool(data["use_slots"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def cluster_settings(self) -> ClusterSettings:
        """The cluster-wide settings in force: cluster.conf's, else (before the first turn wrote it) the config's."""
        return self.read_cluster_settings() or ClusterSettings(use_slots=self.settings.use_slots)

    def write_cluster_settings(self, cluster: ClusterSettings) -> None:
        """cluster.conf with the parameters (the ones Regent manages left out: the schema refuses them too); then
        our other files, which take the cluster-wide pg_hba lines (unless this member's config has its own) and
        use_slots (a standby's primary_slot_name)."""
        mark = {
            "parameters": [list(pair) for pair in cluster.parameters],
            "pg_hba": list(cluster.pg_hba),
            "use_slots": cluster.use_slots,
        }
        lines = [STATE_MARK + json.dumps(mark)]
        lines += ["# Written by Regent from the DCS config key's postgresql.parameters: edit that (PATCH /config)."]
        lines += [_line(name, value) for name, value in cluster.parameters if name.lower() not in NODE_KEYS]
        self.make_dir()
        self.runner.write_file(self.cluster_conf, "\n".join(lines) + "\n")
        self.write_all()

    # --- writing -----------------------------------------------------------------------------------------

    def make_dir(self) -> None:
        self.runner.make_dir(self.dir, 0o700)

    def write_conf(self, state: NodeState) -> None:
        self.runner.write_file(self.conf, self.render_conf(state))

    def write_all(self, state: NodeState | None = None) -> None:
        """Every own file from the current settings; `state` defaults to what the conf file holds now.
        Raises ConfError for a setting Postgres could never read, OSError if the files cannot be written."""
        self.make_dir()
        state = self.read_state() if state is None else state
        self.write_conf(state)
        self.runner.write_file(self.hba, self.render_hba())
        if not self.ident.exists():
            self.runner.write_file(self.ident, "# Written by Regent: no user name maps.\n")
        self.runner.write_file(self.pgpass, self.render_pgpass())

    # --- files in the data directory ---------------------------------------------------------------------

    def set_standby_signal(self, standby: bool) -> None:
        data = self.settings.data_dir
        signal = data / "standby.signal"
        if standby:
            (data / "recovery.signal").unlink(missing_ok=True)  # archive recovery that ends in promotion: never ours
            if not signal.exists():
                self.runner.write_file(signal, "")
        else:
            signal.unlink(missing_ok=True)

    def clean_auto_conf(self) -> list[str]:
        """Remove from the data directory's postgresql.auto.conf the keys our file owns (a copy from another node
        carries its port, primary_conninfo, slot name). Returns the keys removed."""
        path = self.settings.data_dir / "postgresql.auto.conf"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return []
        owned = NODE_KEYS | {name.lower() for name, _ in self.settings.recovery_conf}
        kept, removed = [], []
        for line in text.splitlines():
            match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?", line)
            if match and not line.lstrip().startswith("#") and match.group(1).lower() in owned:
                removed.append(match.group(1))
            else:
                kept.append(line)
        if removed:
            self.runner.write_file(path, "\n".join(kept) + "\n")
        return removed


def _line(name: str, value: Any) -> str:
    if not NAME.match(name):
        raise ConfError(f"{name!r} is not a Postgres setting name")
    return f"{name} = {conf_value(value)}"


def _quoted_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hba_name(name: str) -> str:
    """A role name in pg_hba.conf: quoted when it holds anything but plain characters."""
    return name if re.fullmatch(r"[A-Za-z0-9_]+", name) else _quoted_name(name)


def _state_json(state: NodeState) -> dict[str, Any]:
    up = state.upstream
    return {
        "upstream": {"name": up.name, "host": up.host, "port": up.port} if up else None,
        "sync_standby": state.sync_standby,
        **({"raised": [list(pair) for pair in state.raised]} if state.raised else {}),
    }
