"""The whole configuration as one declarative schema: the YAML file, `bootstrap.dcs`, the DCS `config` key and
`PATCH`/`PUT /config` are all checked by these models, and every default lives here (the timing ones come from
`fsm.observation.ClusterConfig`, the decision core's own). `docs/configuration.md` is generated from this module
(`python -m runtime.config.reference`), so each field's description is what the reference says of it.

Both layouts a Patroni user has are accepted as written: the seed's (Governor-era: `etcd: {scope, ttl, host}`,
`postgresql.name`, `superuser`, `replication`, `create_replica_method`) and Patroni 4's (top-level `name`,
`bootstrap.dcs`, `postgresql.authentication`). A key outside the schema is an error naming it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from fsm.observation import ClusterConfig

from .values import (
    BasebackupOptions,
    ClusterParameters,
    InitdbOptions,
    Listen,
    Managed,
    Name,
    Port,
    ReadableFile,
    Scalar,
    Seconds,
    Text,
    _address,
    _hosts,
    _network,
    _one_or_more_names,
)

DEFAULTS = ClusterConfig()


class Section(BaseModel):
    """A mapping of the config: unknown keys and wrong types are errors (strict: `"30"` is not a number). A key
    with no value (`parameters:` with every line below commented out) is as if absent, as in Patroni."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _without_empty_keys(cls, value: Any) -> Any:
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


# --- DCS -----------------------------------------------------------------------------------------------------


class Etcd3(Section):
    """etcd's v3 API (its JSON gateway): `host` or `hosts`."""

    host: _address(2379) | None = Field(None, description="one etcd endpoint, host:port")
    hosts: _hosts(2379) | None = Field(None, description="etcd endpoints: a list, or host:port text split by commas")
    protocol: Literal["http", "https"] = Field("http", description="how to reach etcd")
    username: Text | None = Field(None, description="etcd user (with `password`)")
    password: Text | None = Field(None, description="etcd password (with `username`)")
    cacert: ReadableFile | None = Field(None, description="CA certificate to verify etcd's")
    cert: ReadableFile | None = Field(None, description="client certificate (with `key`)")
    key: ReadableFile | None = Field(None, description="client certificate's key")

    @field_validator("hosts")
    @classmethod
    def _not_both(cls, hosts: Any, info: Any) -> Any:
        if info.data.get("host") is not None:
            raise ValueError("give `host` or `hosts`, not both")
        return hosts


class Etcd(Etcd3):
    """etcd's v2 API (python-etcd): the v3 section's endpoints, and the seed's places for `scope` and `ttl`."""

    scope: Name | None = Field(None, description="the seed's place for the cluster name (else the top-level `scope`)")
    ttl: Seconds | None = Field(None, description="the seed's place for `ttl`")


class Exhibitor(Section):
    hosts: _hosts(8181) = Field(description="Exhibitor hosts (the port comes from `port`)")
    port: Port = Field(8181, description="Exhibitor's REST port")
    poll_interval: Seconds = Field(300.0, description="how often the ensemble is read from Exhibitor")


class ZooKeeper(Section):
    scope: Name | None = Field(None, description="the seed's place for the cluster name")
    hosts: _hosts(2181) | None = Field(None, description="the ensemble: a list, or host:port text split by commas")
    session_timeout: Seconds | None = Field(
        None, description="the session (and leader lease) asked for; default: ttl, as Patroni asks"
    )
    reconnect_timeout: Seconds = Field(1.0, description="the longest wait between two attempts to reconnect")
    exhibitor: Exhibitor | None = Field(None, description="discover the ensemble from Exhibitor instead of `hosts`")


# --- REST API and its clients --------------------------------------------------------------------------------


class Login(Section):
    username: Text = Field(description="user name")
    password: Text = Field(description="password (quote it when it looks like a number)")


class RestApi(Section):
    listen: _address(8008) = Field(description="where the REST API listens, host:port")
    connect_address: _address(8008) | None = Field(
        None, description="what other members and HAProxy use (default: `listen`)"
    )
    authentication: Login | None = Field(None, description="HTTP Basic login the unsafe methods require")
    auth: str | None = Field(None, description="the seed's spelling of `authentication`: 'user:password'")
    certfile: ReadableFile | None = Field(None, description="serve HTTPS with this certificate (with `keyfile`)")
    keyfile: ReadableFile | None = Field(None, description="the certificate's private key")
    cafile: ReadableFile | None = Field(None, description="CA that client certificates are checked against")
    verify_client: Literal["none", "optional", "required"] = Field(
        "none", description="client certificates: not asked, checked when given, or required (needs `cafile`)"
    )
    allowlist: list[Annotated[str, PlainValidator(_network)]] = Field(
        [], description="addresses or networks allowed to call the unsafe methods (empty: any)"
    )

    @field_validator("auth")
    @classmethod
    def _user_colon_password(cls, auth: str | None) -> str | None:
        if auth is not None and not re.fullmatch(r"[^:]+:.+", auth):
            raise ValueError("expected 'user:password'")
        return auth


class Ctl(Section):
    """Read by the command-line client (patronictl, regentctl); the agent uses its TLS settings too, for its own
    calls to https members (failsafe mode's POST /failsafe), as Patroni's does."""

    insecure: bool = Field(False, description="connect to HTTPS REST APIs without verifying their certificate")
    cacert: ReadableFile | None = Field(None, description="CA to verify the REST APIs' certificates")
    certfile: ReadableFile | None = Field(None, description="client certificate")
    keyfile: ReadableFile | None = Field(None, description="client certificate's key")
    authentication: Login | None = Field(None, description="login for the unsafe methods")


# --- Postgres ------------------------------------------------------------------------------------------------


class Role(Section):
    username: Text = Field(description="role name")
    password: str | None = Field(None, description="its password (text: quote one that looks like a number)")


class ReplicationRole(Role):
    network: str = Field("127.0.0.1/32", description="the seed's: where standbys connect from (a pg_hba address)")

    @field_validator("network")
    @classmethod
    def _one_word(cls, network: str) -> str:
        if not network.strip() or any(c.isspace() for c in network.strip()):
            raise ValueError(f"{network!r} is not a pg_hba address (like 10.0.0.0/8)")
        return network.strip()


class PasswordOnly(Section):
    """The seed's `superuser: {password}`: the role is `postgres`."""

    username: Text = Field("postgres", description="role name")
    password: str | None = Field(None, description="its password")


class Authentication(Section):
    superuser: PasswordOnly = Field(PasswordOnly(), description="the role the agent connects as")
    replication: Role = Field(Role(username="replicator"), description="the role standbys stream and clone as")
    rewind: Role | None = Field(None, description="the role pg_rewind connects as (default: the superuser)")


# postgresql.conf settings Regent writes itself, and where their value comes from.
class Callbacks(Section):
    on_start: str | None = Field(None, description="script run after Postgres starts")
    on_stop: str | None = Field(None, description="script run after Postgres stops")
    on_restart: str | None = Field(None, description="script run after a restart")
    on_reload: str | None = Field(None, description="script run after a reload")
    on_role_change: str | None = Field(None, description="script run after a promotion or demotion")


class RecoveryConf(Section):
    """The recovery.conf settings, as PostgreSQL 12+ parameters (Regent writes standby.signal itself)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    restore_command: Scalar | None = None
    archive_cleanup_command: Scalar | None = None
    recovery_end_command: Scalar | None = None
    recovery_min_apply_delay: Scalar | None = None
    recovery_target: Scalar | None = None
    recovery_target_name: Scalar | None = None
    recovery_target_time: Scalar | None = None
    recovery_target_xid: Scalar | None = None
    recovery_target_lsn: Scalar | None = None
    recovery_target_inclusive: Scalar | None = None
    recovery_target_timeline: Scalar | None = None
    recovery_target_action: Scalar | None = None
    promote_trigger_file: Scalar | None = None
    trigger_file: Scalar | None = Field(None, description="the old name of promote_trigger_file")
    standby_mode: Scalar | None = Field(None, description="accepted for old files: a standby gets standby.signal")
    primary_conninfo: Managed = Field(None, description="refused: Regent points each standby at the leader")
    primary_slot_name: Managed = Field(None, description="refused: Regent names the slot after the member")


class Postgresql(Section):
    """One member's Postgres. Extra mappings with a `command` are replica-creation methods, named in
    `create_replica_methods`."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # method sections; checked in resolve
    __pydantic_extra__: dict[str, dict[str, Any]] = Field(init=False)  # a key that is no mapping is unknown

    name: Name | None = Field(None, description="the seed's place for the member name (else the top-level `name`)")
    scope: Name | None = Field(None, description="the seed's place for the cluster name")
    listen: Listen = Field(description="addresses Postgres listens on, comma-separated, the port after the last")
    connect_address: _address(None) = Field(description="what other members and applications connect to")
    data_dir: Text = Field(description="the data directory (relative: to the config file's folder)")
    bin_dir: Text | None = Field(None, description="where initdb, pg_ctl, ... are (default: PostgreSQL 15's)")
    config_dir: Text | None = Field(None, description="this node's own files (default: `<data_dir>.regent`)")
    os_user: Text = Field("postgres", description="Regent's: the OS user Postgres runs as when the agent is root")
    pgpass: Text | None = Field(None, description="the password file the agent writes for libpq")
    pg_ctl_timeout: Seconds = Field(60.0, description="how long a start or stop of Postgres may take")
    maximum_lag_on_failover: Annotated[int, Field(ge=0)] | None = Field(None, description="the seed's place")
    use_slots: bool | None = Field(None, description="the seed's place (else `bootstrap.dcs.postgresql`)")
    use_pg_rewind: bool | None = Field(None, description="a diverged member may pg_rewind (else it re-clones)")
    remove_data_directory_on_rewind_failure: bool = Field(
        False, description="delete, rather than move aside, the data directory a failed pg_rewind leaves"
    )
    remove_data_directory_on_diverged_timelines: bool = Field(
        False, description="delete, rather than move aside, a diverged data directory that is re-cloned"
    )
    initdb: InitdbOptions | None = Field(None, description="the seed's place for initdb options")
    pg_hba: list[Text] | None = Field(
        None, description="pg_hba.conf lines of this member (else the DCS config key's, else `bootstrap.pg_hba`)"
    )
    authentication: Authentication | None = Field(None, description="Patroni 4's roles")
    superuser: PasswordOnly | None = Field(None, description="the seed's superuser")
    replication: ReplicationRole | None = Field(None, description="the seed's replication role")
    admin: Role | None = Field(None, description="a role created at bootstrap with CREATEDB, CREATEROLE")
    pg_rewind: Role | None = Field(None, description="the seed's place for the rewind role")
    callbacks: Callbacks = Field(Callbacks(), description="scripts run on events (path; relative: to the file)")
    recovery_conf: RecoveryConf = Field(RecoveryConf(), description="recovery settings of a standby")
    parameters: ClusterParameters = Field({}, description="postgresql.conf settings of this member")
    create_replica_methods: Annotated[list[Name], BeforeValidator(_one_or_more_names)] | None = Field(
        None, description="how to make a replica, in order: `basebackup` or a method section's name"
    )
    create_replica_method: Annotated[list[Name], BeforeValidator(_one_or_more_names)] | None = Field(
        None, description="the seed's spelling of `create_replica_methods`"
    )
    basebackup: BasebackupOptions = Field((), description="pg_basebackup options: `- verbose`, `- max-rate: 100M`")


class ReplicaMethod(Section):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # the rest: --key=value for the command
    command: Text = Field(description="the script that fills the data directory")
    keep_data: bool = Field(False, description="leave the existing data directory in place for the script")


# --- cluster-wide: bootstrap.dcs, the DCS config key ---------------------------------------------------------


class DynamicPostgresql(Section):
    use_pg_rewind: bool = Field(True, description="a diverged member may pg_rewind (else it re-clones)")
    use_slots: bool = Field(DEFAULTS.use_slots, description="standbys stream through replication slots")
    pg_hba: list[Text] | None = Field(None, description="pg_hba.conf lines of every member (reloaded on a change)")
    parameters: ClusterParameters = Field({}, description="postgresql.conf settings of every member")
    recovery_conf: RecoveryConf | None = Field(None, description="recovery settings of every standby")


class DynamicConfig(Section):
    """The cluster-wide settings: `bootstrap.dcs` seeds the DCS `config` key; `PATCH /config` edits it."""

    ttl: Seconds = Field(DEFAULTS.ttl_s, description="the leader lease, seconds")
    loop_wait: Seconds = Field(DEFAULTS.loop_wait_s, description="sleep between two turns of the loop")
    retry_timeout: Seconds = Field(DEFAULTS.retry_timeout_s, description="how long one DCS operation may retry")
    maximum_lag_on_failover: Annotated[int, Field(ge=0)] = Field(
        DEFAULTS.maximum_lag_on_failover_bytes, description="bytes a replica may lag and still be promoted"
    )
    primary_start_timeout: Annotated[float, Field(ge=0)] = Field(
        DEFAULTS.primary_start_timeout_s, description="how long a crashed primary may take to restart"
    )
    synchronous_mode: bool = Field(DEFAULTS.synchronous_mode, description="promote only the named sync standby")
    pause: bool = Field(DEFAULTS.pause, description="maintenance mode: no automatic failover")
    failsafe_mode: bool = Field(
        DEFAULTS.failsafe_mode,
        description="with the DCS unreachable, the leader leads on while every member of the `failsafe` key "
        "accepts its POST /failsafe (Patroni's DCS failsafe mode)",
    )
    postgresql: DynamicPostgresql = Field(DynamicPostgresql(), description="Postgres settings of every member")


class Bootstrap(Section):
    dcs: DynamicConfig = Field(DynamicConfig(), description="written to the DCS `config` key at initialization")
    initdb: InitdbOptions = Field((), description="initdb options: `- data-checksums`, `- encoding: UTF8`")
    pg_hba: list[Text] | None = Field(
        None, description="pg_hba.conf lines while neither `postgresql.pg_hba` nor the DCS config key's are set"
    )


# --- the rest of the file ------------------------------------------------------------------------------------


class Watchdog(Section):
    mode: Literal["off", "automatic", "required"] = Field("automatic", description="use the watchdog fence?")
    device: Text | None = Field(None, description="Linux /dev/watchdog device, used when present")
    safety_margin: Seconds | None = Field(None, description="Patroni's place for the top-level `safety_margin`")


class Tags(Section):
    nofailover: bool = Field(False, description="never promote this member")
    failover_priority: Annotated[int, Field(ge=0)] = Field(1, description="higher goes first; 0 never promotes")
    nosync: bool = Field(False, description="never the synchronous standby")
    noloadbalance: bool = Field(False, description="`GET /replica` answers 503: keep read traffic away")
    clonefrom: bool = Field(False, description="new replicas prefer to clone from this member")
    nostream: bool = Field(False, description="no streaming: replay WAL from the archive only (restore_command)")
    replicatefrom: Text | None = Field(
        None, description="cascading: stream from this member while it runs as a replica (else from the leader)"
    )


class Log(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="the agent's level")
    format: Text = Field("%(asctime)s %(levelname)s %(name)s: %(message)s", description="Python logging format")
    dateformat: Text | None = Field(None, description="strftime format of %(asctime)s")
    dir: Text | None = Field(None, description="write `regent.log` here (rotated) instead of stderr")
    file_num: Annotated[int, Field(ge=1)] = Field(4, description="rotated files kept")
    file_size: Annotated[int, Field(ge=4096)] = Field(25_000_000, description="bytes before a file is rotated")
    loggers: dict[Text, Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]] = Field(
        {}, description="levels of other loggers (`etcd.client: ERROR`)"
    )


class RegentFile(Section):
    """One member's YAML file, `regent postgres0.yml`."""

    scope: Name | None = Field(None, description="the cluster's name")
    namespace: Text = Field("/service/", description="the DCS prefix the cluster's keys live under")
    name: Name | None = Field(None, description="this member's name")
    ttl: Seconds | None = Field(None, description=f"the leader lease, seconds ({DEFAULTS.ttl_s:g}; the DCS key wins)")
    loop_wait: Seconds | None = Field(None, description=f"seconds between two turns ({DEFAULTS.loop_wait_s:g})")
    retry_timeout: Seconds | None = Field(
        None, description=f"how long one DCS operation may retry ({DEFAULTS.retry_timeout_s:g})"
    )
    safety_margin: Seconds | None = Field(
        None,
        description=f"seconds the leader's own deadline falls before the key's expiry ({DEFAULTS.safety_margin_s:g})",
    )
    primary_start_timeout: Annotated[float, Field(ge=0)] | None = Field(
        None, description=f"how long a crashed primary may take to restart ({DEFAULTS.primary_start_timeout_s:g})"
    )
    synchronous_mode: bool | None = Field(None, description="promote only the named sync standby (false)")
    restapi: RestApi = Field(description="the REST API")
    ctl: Ctl | None = Field(None, description="settings of the command-line client")
    etcd: Etcd | None = Field(None, description="the DCS: etcd's v2 API (exactly one of etcd, etcd3 and zookeeper)")
    etcd3: Etcd3 | None = Field(None, description="the DCS: etcd's v3 API (etcd 3.4 and later with default flags)")
    zookeeper: ZooKeeper | None = Field(None, description="the DCS: ZooKeeper")
    bootstrap: Bootstrap = Field(Bootstrap(), description="how a new cluster is made")
    postgresql: Postgresql = Field(description="this member's Postgres")
    watchdog: Annotated[Watchdog, BeforeValidator(lambda v: _watchdog_shorthand(v))] = Field(
        Watchdog(), description="the fence; `watchdog: off` is short for `{mode: off}`"
    )
    tags: Tags = Field(Tags(), description="this member's tags")
    log: Log = Field(Log(), description="the agent's logging")


def _watchdog_shorthand(value: Any) -> Any:
    if value is False:  # YAML reads a bare `off` as false
        return {"mode": "off"}
    if isinstance(value, str):
        return {"mode": value}
    return value
