"""docs/configuration.md, the reference of every key, generated from the schema: `python -m runtime.config.reference`
writes it, `--check` fails (exit 1) when the file is not what the schema says (CI runs it, as for the diagrams)."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import schema
from .errors import NOT_IMPLEMENTED

TARGET = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
HEADER = """# Configuration reference

Generated from `runtime/config/schema.py` by `python -m runtime.config.reference`; do not edit by hand.

One YAML file per member (`regent postgres0.yml`), Patroni's layout: both the seed's (Governor-era) and Patroni 4's
are accepted as written. `bootstrap.dcs` is written to the DCS `config` key when the cluster is initialized; from
then on that key (`PATCH /config`, `PUT /config`, `patronictl edit-config`) overrides the file's cluster-wide values.
`PATRONI_*` environment variables override the file as Patroni documents (`runtime/config/environment.py`).
A key not listed here is refused with the closest known key; a required key (no default) must be given.

Timing: a leader's sleep and its DCS requests end at its lease deadline (`renewed + ttl - safety_margin`), so it
demotes in time whatever the settings; the rule `loop_wait + 2 * retry_timeout <= ttl` (Patroni's) and
`loop_wait + safety_margin < ttl` keep a healthy leader from losing its lease.
"""


def render() -> str:
    lines = [HEADER]
    _section(schema.RegentFile, "", lines)
    lines += ["", "## Patroni settings Regent refuses", "", "| key | what it is |", "|---|---|"]
    lines += [f"| `{key}` | {what} |" for key, what in sorted(NOT_IMPLEMENTED.items())]
    return "\n".join(lines) + "\n"


def _section(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    title = prefix.rstrip(".") or "top level"
    lines += ["", f"## `{title}`" if prefix else f"## {title}", ""]
    if model.__doc__ and model.__doc__ != schema.Section.__doc__:
        lines += [" ".join(model.__doc__.split()), ""]
    lines += ["| key | type | default | |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        default = "required" if field.is_required() else _default(field.default)
        kind = next((_plain(m.func) for m in field.metadata if hasattr(m, "func") and _plain(m.func)), "")
        kind = kind or _type(field.annotation)
        lines.append(f"| `{prefix}{name}` | {kind} | {default} | {field.description or ''} |")
        if inner is not None:
            nested.append((inner, f"{prefix}{name}."))
    for inner, where in nested:
        _section(inner, where, lines)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _type(annotation: Any) -> str:
    """A short name of the type a user writes: text, number, true/false, list, mapping, one of ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        validators = [m for m in annotation.__metadata__ if hasattr(m, "func")]
        return _plain(validators[0].func) if validators and _plain(validators[0].func) else _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{str(a).lower() if isinstance(a, bool) else a}`" for a in args)
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return {str: "text", int: "whole number", float: "number", bool: "true/false"}.get(annotation, str(annotation))


def _plain(func: Any) -> str:
    """The label of a value type whose validator is `func` (the schema's own parsers), or ""."""
    name = getattr(func, "__qualname__", "").replace(".<locals>.parse", "")
    return PLAIN.get(name.rpartition(".")[2], "")


PLAIN = {"_address": "host:port", "_hosts": "host:port list", "_options": "option list", "_readable_file": "file",
         "_scalar": "text, number or true/false", "_network": "address or network", "_listen": "addresses:port",
         "_managed": "(refused)"}  # fmt: skip


def _default(value: Any) -> str:
    if value is PydanticUndefined or value is None:
        return ""
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ((), [], {}):
        return ""
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run python -m runtime.config.reference", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
