"""The one grammar for Keptn event-type strings.

Keptn classifies a type by splitting it on dots after the ``sh.keptn.event.`` prefix:

* ``<stage>.<sequence>.triggered|finished`` is a *sequence* event,
* ``<task>.triggered|started|finished|invalidated`` is a *task* event, and
* ``<task>.status.changed`` is a task's progress report.

Stage, sequence and task names therefore never contain dots. Every other module builds
and reads type strings through this one, so the grammar lives in exactly one place.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

PREFIX = "sh.keptn.event."

# Types Keptn accepts through its API without the task/sequence grammar.
LOG_ERROR = "sh.keptn.log.error"
PROBLEM = "sh.keptn.events.problem"


class Phase(enum.StrEnum):
    TRIGGERED = "triggered"
    STARTED = "started"
    STATUS_CHANGED = "status.changed"
    FINISHED = "finished"
    INVALIDATED = "invalidated"


_SEQUENCE_PHASES = {Phase.TRIGGERED, Phase.FINISHED}
# A type is also a NATS subject, so its names may not hold whitespace or NATS wildcards.
_NAME = re.compile(r"[^\s*>.]+")


class EventTypeError(ValueError):
    """The string does not follow the Keptn event-type grammar."""


@dataclass(frozen=True, slots=True)
class SequenceEventType:
    """``sh.keptn.event.<stage>.<sequence>.<phase>``."""

    stage: str
    sequence: str
    phase: Phase

    def __str__(self) -> str:
        return f"{PREFIX}{self.stage}.{self.sequence}.{self.phase}"


@dataclass(frozen=True, slots=True)
class TaskEventType:
    """``sh.keptn.event.<task>.<phase>``."""

    task: str
    phase: Phase

    def __str__(self) -> str:
        return f"{PREFIX}{self.task}.{self.phase}"


EventType = SequenceEventType | TaskEventType


def normalize(raw: str) -> str:
    """Return the full form of a type, accepting the short form without the prefix.

    ``dev.sequence-one.triggered`` becomes ``sh.keptn.event.dev.sequence-one.triggered``;
    other ``sh.keptn.*`` types are returned unchanged.
    """
    if raw.startswith("sh.keptn."):
        return raw
    return PREFIX + raw


@functools.lru_cache(maxsize=4096)
def parse(raw: str) -> EventType:
    """Parse a full or short event type into a sequence or task event type.

    Raises:
        EventTypeError: the type is not a Keptn task or sequence event type.
    """
    full = normalize(raw)
    if not full.startswith(PREFIX):
        raise EventTypeError(f"event type {raw!r} is not a Keptn task or sequence event")
    parts = full[len(PREFIX) :].split(".")
    if any(not part for part in parts):
        raise EventTypeError(f"event type {raw!r} has an empty segment")
    for part in parts:
        if not _NAME.fullmatch(part):
            raise EventTypeError(
                f"event type {raw!r}: {part!r} may not contain whitespace, '*' or '>'"
                " (event types are NATS subjects)"
            )
    if len(parts) == 3 and parts[1] == "status" and parts[2] == "changed":
        return TaskEventType(parts[0], Phase.STATUS_CHANGED)
    if len(parts) == 2:
        phase = _phase(parts[1], raw)
        return TaskEventType(parts[0], phase)
    if len(parts) == 3:
        phase = _phase(parts[2], raw)
        if phase not in _SEQUENCE_PHASES:
            raise EventTypeError(
                f"event type {raw!r}: a sequence event ends in .triggered or .finished,"
                f" not .{phase}"
            )
        return SequenceEventType(parts[0], parts[1], phase)
    raise EventTypeError(
        f"event type {raw!r} must be sh.keptn.event.<task>.<phase> or"
        " sh.keptn.event.<stage>.<sequence>.<phase>"
    )


def _phase(word: str, raw: str) -> Phase:
    try:
        return Phase(word)
    except ValueError:
        raise EventTypeError(f"event type {raw!r} ends in unknown phase {word!r}") from None


@functools.lru_cache(maxsize=4096)
def task(name: str, phase: Phase) -> str:
    return str(TaskEventType(name, phase))


def sequence(stage: str, name: str, phase: Phase) -> str:
    return str(SequenceEventType(stage, name, phase))


class PatternError(ValueError):
    """An event-type pattern is not a valid NATS subject pattern."""


def check_pattern(raw: str) -> str:
    """Return the full form of an event-type pattern (NATS wildcards allowed).

    Subscriptions name event types the way NATS names subjects: ``*`` stands for one
    dot-separated token, ``>`` (last token only) for one or more. Short forms such as
    ``checknumber.triggered`` get the ``sh.keptn.event.`` prefix, as types do.

    Raises:
        PatternError: an empty token, a wildcard inside a token, ``>`` before the end, or a
            pattern outside ``sh.keptn.``.
    """
    full = normalize(raw.strip())
    tokens = full.split(".")
    for index, token in enumerate(tokens):
        if not token:
            raise PatternError(f"event type {raw!r} has an empty segment")
        if token == ">" and index != len(tokens) - 1:
            raise PatternError(f"event type {raw!r}: '>' may only be the last segment")
        if token not in ("*", ">") and not _NAME.fullmatch(token):
            raise PatternError(
                f"event type {raw!r}: {token!r} may not contain whitespace, or '*' and '>'"
                " other than as a whole segment"
            )
    return full


def pattern_matches(pattern: str, event_type: str) -> bool:
    """Whether a NATS-style pattern (from :func:`check_pattern`) matches a concrete type."""
    if pattern == event_type:
        return True
    want = pattern.split(".")
    have = event_type.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return index < len(have)
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def is_triggered_pattern(pattern: str) -> bool:
    """Whether every type a pattern matches is a ``.triggered`` event (what can be pushed)."""
    return pattern.endswith(".triggered") and ">" not in pattern
