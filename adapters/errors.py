"""The error every config problem ends in: the CLI prints one line per problem and exits 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more settings are wrong; each line names its setting by its key path (`postgresql.listen: ...`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
