"""Reading one section of the YAML config while collecting every problem, each naming its key."""

from __future__ import annotations

import difflib
from typing import Any


class ConfigError(ValueError):
    """One or more settings are wrong; each line names its setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SectionReader:
    """Reads the mapping at `where` (`etcd`, `postgresql.replication`, ...); `done()` raises `error` listing every
    problem found, so a user fixes a broken config in one round."""

    def __init__(self, section: Any, where: str, error: type[ConfigError] = ConfigError) -> None:
        self.where = where
        self.error = error
        self.problems: list[str] = []
        if not isinstance(section, dict):
            self.problems.append(f"{where}: must be a mapping, got {type(section).__name__}")
            section = {}
        self.section: dict[str, Any] = section

    def take(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        value = self.section.get(key, default)
        if value is None:
            if required:
                self.problems.append(f"{self.where}.{key}: missing")
            return default
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problems.append(f"{self.where}.{key}: expected {kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problems.append(f"{self.where}.{key}: expected {kind_name(kind)}, got {type(value).__name__}")
            return default
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.take(key, (int, float), default)
        if value <= 0:
            self.problems.append(f"{self.where}.{key}: must be positive, got {value}")
        return float(value)

    def unknown(self, known: set[str]) -> None:
        """Report keys outside `known`, suggesting the closest known one (a typo is the usual cause)."""
        for key in sorted(set(self.section) - known, key=str):
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
            self.problems.append(f"{self.where}.{key}: unknown setting ({hint})")

    def done(self) -> None:
        if self.problems:
            raise self.error(self.problems)


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "list": "a list",
        "dict": "a mapping",
        "bool": "true or false",
    }
    return " or ".join(dict.fromkeys(names.get(k.__name__, k.__name__) for k in kinds))
