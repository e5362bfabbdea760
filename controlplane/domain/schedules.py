"""Schedules: cron expressions that trigger a sequence with fixed data.

A schedule comes from a shipyard (``spec.schedules``) or from the HTTP API; both are read by
:func:`parse_schedule`, which reports every problem with its field path, so a bad
expression or time zone is refused when it is written, never discovered when it fires.

The firing rule, :func:`due`, is pure: given the last slot that fired (or, for a schedule
that never fired, the moment it was first seen), the clock and a grace period, it says which
slot to fire now. Slots between the last one and ``now - grace`` are *missed* (the control
plane was down, or the schedule's replicas were all busy); slots after that are on time.
The ``missed`` policy says what happens to missed slots:

``skip`` (the default)
    None of them fires. A schedule says "at these times"; running a nightly job at 10:00
    because the control plane was down at 02:00 is usually wrong, and never silently so.
``runOnce``
    The latest missed slot fires once, however many were missed: for work that must happen
    after an outage but is pointless to repeat (a report, a clean-up).

Slots before the schedule was first seen never count as missed: adding a schedule (or
changing its expression or time zone, which makes it a new one) does not back-fill.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controlplane.domain.cron import Cron, InvalidCron, parse_cron
from controlplane.domain.errors import Problem, kind_of

__all__ = [
    "DEFAULT_TIMEZONE",
    "KEYS",
    "MISSED_POLICIES",
    "Firing",
    "Schedule",
    "due",
    "parse_schedule",
    "parse_schedules",
    "slot_text",
]

DEFAULT_TIMEZONE = "UTC"
SKIP, RUN_ONCE = "skip", "runOnce"
MISSED_POLICIES = (SKIP, RUN_ONCE)
KEYS = ("name", "cron", "timezone", "stage", "sequence", "service", "data", "missed")
# The schedule fills these in; a value in ``data`` would be silently replaced.
_SCOPE_KEYS = ("project", "stage", "service")
# The shipyard's entity-name rule (shipyard.NAME_RULE, which imports this module; a test
# keeps the two equal): a schedule's name is part of a URL and of the events' labels.
NAME_RULE = re.compile(r"(^[a-z][a-z0-9-]*[a-z0-9]$)|(^[a-z][a-z0-9]*$)")

_Add = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    cron_text: str
    cron: Cron
    timezone: str
    stage: str
    sequence: str
    service: str
    data: Mapping[str, Any] = field(default_factory=dict)
    missed: str = SKIP

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # cached by zoneinfo, and known to exist

    @property
    def fingerprint(self) -> str:
        """What decides the slots: a change makes the schedule a new one (no back-fill)."""
        return f"{self.cron_text}|{self.timezone}"

    def document(self) -> dict[str, Any]:
        """The schedule as it is written (shipyard entry, API body)."""
        return {
            "name": self.name,
            "cron": self.cron_text,
            "timezone": self.timezone,
            "stage": self.stage,
            "sequence": self.sequence,
            "service": self.service,
            "data": dict(self.data),
            "missed": self.missed,
        }


def slot_text(slot: float) -> str:
    """A slot as RFC 3339 in UTC with whole seconds: the ``scheduledFor`` label, id input."""
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- parsing


def parse_schedules(raw: object, path: str) -> tuple[tuple[Schedule, ...], list[Problem]]:
    """Read a list of schedules (``spec.schedules``); every problem carries its path.

    Stage and sequence are only checked to be present here; whether the shipyard has them
    is for the caller, which knows the shipyard.
    """
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        return (), [Problem(path, f"must be a list of schedules, got {kind_of(raw)}")]
    schedules: list[Schedule] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        schedule, found = parse_schedule(item, item_path)
        problems.extend(found)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name:
            if name in seen:
                problems.append(Problem(f"{item_path}.name", f"schedule {name!r} is defined twice"))
            seen.add(name)
        if schedule is not None:
            schedules.append(schedule)
    return tuple(schedules), problems


def parse_schedule(raw: object, path: str = "") -> tuple[Schedule | None, list[Problem]]:
    """Read one schedule (a shipyard entry or an API body); None when it has problems."""
    problems: list[Problem] = []

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    def add(key: str, message: str) -> None:
        problems.append(Problem(at(key), message))

    if not isinstance(raw, Mapping):
        return None, [
            Problem(path, f"a schedule is a mapping with 'name' and 'cron', got {kind_of(raw)}")
        ]
    for key in raw:
        if key not in KEYS:
            add(str(key), f"unknown key; a schedule has {', '.join(KEYS)}")
    name = _name(raw.get("name"), add)
    cron_text, cron = _cron(raw.get("cron"), add)
    timezone = _timezone(raw.get("timezone"), add)
    stage = _text(raw.get("stage"), "stage", "the stage to run the sequence in", add)
    sequence = _text(raw.get("sequence"), "sequence", "the sequence to trigger", add)
    service = _text(raw.get("service"), "service", "the service the sequence runs for", add)
    data = _data(raw.get("data"), add)
    missed = raw.get("missed", SKIP)
    if missed not in MISSED_POLICIES:
        add("missed", f"must be {SKIP!r} or {RUN_ONCE!r}, got {missed!r}")
    if problems or cron is None:
        return None, problems
    schedule = Schedule(
        name, cron_text, cron, timezone, stage, sequence, service, data, str(missed)
    )
    return schedule, problems


def _name(value: object, add: _Add) -> str:
    if not isinstance(value, str) or not value:
        add("name", "every schedule needs a non-empty name")
        return ""
    if not NAME_RULE.fullmatch(value):
        add(
            "name",
            f"schedule name {value!r} must be lowercase letters, digits and dashes,"
            " start with a letter and not end with a dash",
        )
    return value


def _cron(value: object, add: _Add) -> tuple[str, Cron | None]:
    if not isinstance(value, str) or not value.strip():
        add("cron", f"must be a cron expression such as '0 2 * * *', got {kind_of(value)}")
        return "", None
    try:
        return value.strip(), parse_cron(value)
    except InvalidCron as exc:
        add("cron", str(exc))
        return value, None


def _timezone(value: object, add: _Add) -> str:
    if value is None:
        return DEFAULT_TIMEZONE
    if not isinstance(value, str) or not value:
        add("timezone", f"must be an IANA time zone such as 'Europe/Berlin', got {value!r}")
        return DEFAULT_TIMEZONE
    if value == "localtime" or value.startswith(("posix/", "right/")):
        # The host's own setting or a variant of the database: machines may disagree.
        add("timezone", f"{value!r} depends on the machine; name the zone, such as 'Europe/Berlin'")
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder
        add("timezone", f"{value!r} is not a known IANA time zone (such as 'Europe/Berlin')")
    return value


def _text(value: object, key: str, what: str, add: _Add) -> str:
    if not isinstance(value, str) or not value:
        add(key, f"is required: {what}")
        return ""
    if "." in value or any(char.isspace() or char in "*>" for char in value):
        add(key, f"{value!r} must not contain dots, whitespace, '*' or '>'")
    return value


def _data(value: object, add: _Add) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        add("data", f"must be a mapping, got {kind_of(value)}")
        return {}
    for key in _SCOPE_KEYS:
        if key in value:
            add(f"data.{key}", f"is set by the schedule; use the schedule's own {key!r}")
    labels = value.get("labels")
    if labels is not None and not isinstance(labels, Mapping):
        add("data.labels", f"must be a mapping of strings, got {kind_of(labels)}")
    where = _not_json(value, "data")
    if where:
        add(where[0], where[1])
    return dict(value)


def _not_json(value: object, path: str) -> tuple[str, str] | None:
    """The first part of ``value`` that is not plain JSON (a YAML date, say), if any."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "must be a finite number")
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _not_json(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"keys must be strings, got {key!r}"
            found = _not_json(item, f"{path}.{key}")
            if found:
                return found
        return None
    return path, f"must be JSON (strings, numbers, lists, mappings), got {type(value).__name__}"


# --------------------------------------------------------------------------- firing


@dataclass(frozen=True, slots=True)
class Firing:
    """What :func:`due` decided.

    ``slot``: fire this slot now (None: nothing to fire). ``late``: it is a missed slot
    fired under ``runOnce``. ``missed_through``: the latest slot that counts as missed, if
    any (fired late or skipped). ``next_slot``: the first slot after ``slot`` (or after
    ``now`` when nothing fires); when it is not after ``now``, ask again at once.
    """

    slot: float | None
    next_slot: float | None
    late: bool = False
    missed_through: float | None = None


def due(
    schedule: Schedule, last_slot: float | None, first_seen: float, now: float, grace: float
) -> Firing:
    """Which slot of ``schedule`` to fire at ``now``, if any.

    Args:
        schedule: the schedule.
        last_slot: the latest slot that fired (claimed by any replica), or None.
        first_seen: when the schedule (with its current expression and zone) was first
            seen; slots before it never fire.
        now: the current epoch.
        grace: how late a slot may fire and still be on time, in seconds (positive: a
            slot due exactly now is on time only when ``grace`` > 0).

    Slots in ``(last, now]`` (``last`` being the later of ``last_slot`` and ``first_seen``)
    are candidates. Those after ``now - grace`` are on time and fire one by one, oldest
    first. Older ones are missed: ``skip`` fires none of them, ``runOnce`` fires the latest
    one once; see the module docstring for why ``skip`` is the default.
    """
    zone = schedule.zone
    cron = schedule.cron
    after = first_seen if last_slot is None else max(last_slot, first_seen)
    first = cron.next_after(after, zone)
    if first is None or first > now:
        return Firing(None, first)
    cutoff = now - grace
    if first > cutoff:
        return Firing(first, cron.next_after(first, zone))
    latest_missed = cron.previous_at_or_before(cutoff, zone)
    following = cron.next_after(cutoff, zone)
    if schedule.missed == RUN_ONCE and latest_missed is not None:
        return Firing(latest_missed, following, late=True, missed_through=latest_missed)
    if following is not None and following <= now:
        return Firing(following, cron.next_after(following, zone), missed_through=latest_missed)
    return Firing(None, following, missed_through=latest_missed)
