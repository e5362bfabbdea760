"""Errors of the pure core.

Hierarchy::

    DomainError
    ├── InvalidConfiguration   a document that breaks its format (carries every problem)
    │   ├── InvalidShipyard    a shipyard
    │   ├── InvalidSLO         an SLO (slo.py)
    │   └── InvalidSLI         an indicator configuration (sli_sources.py)
    └── UnknownSequence        a trigger names a stage or sequence the shipyard does not have

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


class InvalidConfiguration(DomainError):
    """A configuration document is invalid; it carries every problem found, with paths."""

    def __init__(self, problems: Sequence[Problem], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__("; ".join(p.render(source) for p in self.problems))


class InvalidShipyard(InvalidConfiguration):
    """The shipyard is invalid."""


def kind_of(value: object) -> str:
    """What a value is, for a message that says what was found instead of what was wanted."""
    if value is None:
        return "nothing"
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
    return kinds.get(type(value), type(value).__name__)


class UnknownSequence(DomainError):
    """The shipyard has no such stage or sequence."""
