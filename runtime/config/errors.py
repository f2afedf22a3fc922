"""pydantic's validation errors as the lines a user reads: the key path, what is wrong, the closest known key."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

# Patroni settings a user may carry over that Regent does not implement: refused with this note, not as typos.
NOT_IMPLEMENTED = {
    "citus": "Citus clusters",
    "raft": "the Raft DCS (use etcd or ZooKeeper)",
    "consul": "the Consul DCS (use etcd or ZooKeeper)",
    "kubernetes": "the Kubernetes DCS (use etcd or ZooKeeper)",
    "exhibitor": "Exhibitor outside `zookeeper` (put it under zookeeper.exhibitor)",
    "standby_cluster": "standby clusters",
    "post_init": "a post_init script",
    "post_bootstrap": "a post_bootstrap script",
    "method": "custom bootstrap methods",
    "users": "users created at bootstrap (deprecated by Patroni too)",
    "pre_promote": "a pre_promote fencing script",
    "proxy_address": "a connection pooler's address",
    "krbsrvname": "Kerberos",
    "synchronous_mode_strict": "strict synchronous mode",
    "synchronous_node_count": "more than one synchronous standby",
    "slots": "permanent replication slots",
    "ignore_slots": "ignored replication slots",
    "sync_priority": "synchronous standby priorities",
    "keyfile_password": "an encrypted key file",
    "use_unix_socket": "a socket connection chosen by the config (the agent always uses its own socket)",
}

# Patroni settings that are cluster-wide only (its dynamic configuration): not in a member's own file.
CLUSTER_WIDE_ONLY = {"failsafe_mode"}


def problems_of(error: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per problem, `postgresql.listen: ...`, in the file's order."""
    lines = []
    for detail in error.errors(include_url=False):
        where = (prefix + "".join(_step(part) for part in detail["loc"] if part != "[key]")).lstrip(".")
        message = _message(detail, model)
        key, colon, rest = message.partition(": ")
        if colon and isinstance(detail.get("input"), dict) and key in detail["input"]:
            where, message = where + _step(key), rest  # a mapping's check that names one of its keys
        lines.append(f"{where or 'config'}: {message}")
    return list(dict.fromkeys(lines))


def _step(part: Any) -> str:
    """One step of a key path: `.listen`, `[1]` in a list, `['work mem']` for a key that is not a plain name."""
    if isinstance(part, int):
        return f"[{part}]"
    return f".{part}" if re.fullmatch(r"[A-Za-z0-9_.-]+", str(part)) else f"[{str(part)!r}]"


def _message(detail: dict[str, Any], model: type[BaseModel]) -> str:
    kind, value = detail["type"], detail.get("input")
    key = str(detail["loc"][-1]) if detail["loc"] else ""
    if kind == "dict_type" and key not in _known_keys(model, detail["loc"][:-1]) | {""}:
        kind = "extra_forbidden"  # a key of a section that also takes named mappings (replica methods)
    if kind == "extra_forbidden":
        if key in NOT_IMPLEMENTED:
            return f"Patroni's setting for {NOT_IMPLEMENTED[key]}, which Regent does not implement"
        if key in CLUSTER_WIDE_ONLY:
            return (
                "cluster-wide only, as in Patroni: set it under bootstrap.dcs (a new cluster) or in the DCS config "
                "key (PATCH /config, regentctl edit-config)"
            )
        known = sorted(_known_keys(model, detail["loc"][:-1]))
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        return "unknown setting (" + (f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}") + ")"
    if kind == "missing":
        return "missing"
    if kind in ("value_error", "assertion_error"):
        return str(detail["ctx"]["error"]) if "ctx" in detail else detail["msg"]
    expected = EXPECTED.get(kind)
    if expected:
        return f"expected {expected}, got {describe(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{detail['msg'].replace('Input should be', 'must be')}, got {value!r}"
    if kind == "literal_error":
        return f"{value!r} is not one of {detail['ctx']['expected']}"
    if kind == "string_pattern_mismatch":
        if "A-Za-z_" in detail["ctx"]["pattern"]:
            return f"{value!r} is not a parameter name"
        return f"{value!r} may hold only letters, digits, '-', '_' and '.'"
    if kind == "string_too_short":
        return "empty"
    return detail["msg"]


EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "int_from_float": "a whole number",
    "finite_number": "a finite number",
}


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, str) else f"text {value!r}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The keys the model accepts at `loc` (a key of a mapping inside a mapping...)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return set()
        field = current.model_fields.get(str(part))
        if field is None:
            return set()
        current = _model_in(field.annotation)
    return set(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else set()


def _model_in(annotation: Any) -> Any:
    """The model inside `Model | None` or `Annotated[Model, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()) or getattr(annotation, "__metadata__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    return _model_in(origin) if origin is not None and origin is not annotation else None
