"""Errors of the pure core.

Hierarchy::

    DomainError
    ├── InvalidShipyard      a shipyard that does not follow the format (carries every problem)
    └── UnknownSequence      a trigger names a stage or sequence the shipyard does not have

Each docstring is the default message. Expected oddities of a distributed system
(duplicates, late answers) are not errors: the state machine answers them with a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DomainError(Exception):
    """The core was asked to do something its rules forbid."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a shipyard: where (field path, YAML line) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str = "") -> str:
        where = source
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        prefix = f"{where}: " if where else ""
        field = f"{self.path}: " if self.path else ""
        return f"{prefix}{field}{self.message}"


class InvalidShipyard(DomainError):
    """The shipyard is invalid."""

    def __init__(self, problems: Sequence[Problem], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__("; ".join(p.render(source) for p in self.problems))


class UnknownSequence(DomainError):
    """The shipyard has no such stage or sequence."""
