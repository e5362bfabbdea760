"""Our shipyard extensions: deadlines, retries, pauses, callbacks and concurrency keys.

All of them are optional keys that Keptn never used, so every Keptn shipyard stays valid and
means what it meant. Each parser takes the raw YAML value and the field path and reports
problems through ``report(path, message)``; a bad value is refused when the shipyard is
loaded, never discovered when a sequence runs.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.domain import durations
from controlplane.domain.errors import kind_of

Report = Callable[[str, str], None]

MAX_ATTEMPTS = 100
MAX_PAUSE_AFTER_ERRORS = 100
MAX_CONCURRENCY = 10_000
# A key field is a dotted path into the trigger's data: {service}, {labels.team}.
_KEY_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


@dataclass(frozen=True, slots=True)
class TaskTimeouts:
    """Deadlines of one task, in seconds; None means the control plane's default or none.

    ``started``: no ``.started`` (or any answer) this long after the ``.triggered``.
    ``finished``: started but not finished this long after the first ``.started``.
    ``heartbeat``: every ``.status.changed`` or ``.started`` pushes the finished deadline
    to at least that event's time plus this much.
    """

    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt ``n+1``: ``min(max, initial * factor**(n-1))``, +/- ``jitter``."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.0  # a fraction of the delay, 0..1


RETRY_ON = ("fail", "errored", "timeout")


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 1  # in all, the first one included
    on: frozenset[str] = frozenset({"errored", "timeout"})
    backoff: Backoff = Backoff()


DEFAULT_CONCURRENCY_KEY = "{project}/{stage}/{service}"


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How many executions sharing a key may hold a slot at once (Keptn: one per service)."""

    key: str = DEFAULT_CONCURRENCY_KEY
    limit: int = 1


def task_timeouts(raw: object, path: str, report: Report) -> TaskTimeouts | None:
    """``timeout: {started, finished, heartbeat}``; a bare duration means ``finished``."""
    if raw is None:
        return None
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        finished = _duration(raw, path, report)
        return TaskTimeouts(finished=finished) if finished is not None else None
    if not isinstance(raw, Mapping):
        report(
            path,
            f"must be a duration or a mapping with started/finished/heartbeat, got {kind_of(raw)}",
        )
        return None
    _unknown_keys(raw, ("started", "finished", "heartbeat"), path, report)
    values = {
        key: _duration(raw.get(key), f"{path}.{key}", report, positive=True)
        for key in ("started", "finished", "heartbeat")
    }
    return TaskTimeouts(**values)


def retry(raw: object, path: str, report: Report) -> Retry | None:
    """``retry: {attempts, on, backoff: {initial, factor, max, jitter}}``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        report(path, f"must be a mapping with 'attempts', got {kind_of(raw)}")
        return None
    _unknown_keys(raw, ("attempts", "on", "backoff"), path, report)
    attempts = _integer(raw.get("attempts"), f"{path}.attempts", report, low=1, high=MAX_ATTEMPTS)
    on = _retry_on(raw.get("on"), f"{path}.on", report)
    backoff = _backoff(raw.get("backoff"), f"{path}.backoff", report)
    if attempts is None:
        if "attempts" not in raw:
            report(f"{path}.attempts", "is required: how many attempts in all, 1 to 100")
        return None
    return Retry(attempts=attempts, on=on, backoff=backoff)


def pause_after_errors(raw: object, path: str, report: Report) -> int:
    if raw is None:
        return 0
    value = _integer(raw, path, report, low=0, high=MAX_PAUSE_AFTER_ERRORS)
    return value or 0


def flag(raw: object, path: str, report: Report) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        report(path, f"must be true or false, got {raw!r}")
        return False
    return raw


def sequence_timeout(raw: object, path: str, report: Report) -> float | None:
    if raw is None:
        return None
    return _duration(raw, path, report, positive=True)


def concurrency(raw: object, path: str, report: Report) -> Concurrency | None:
    """``concurrency: {key, limit}``; the key is a template over the trigger's data."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        report(path, f"must be a mapping with 'key' and/or 'limit', got {kind_of(raw)}")
        return None
    _unknown_keys(raw, ("key", "limit"), path, report)
    default = Concurrency()
    key = raw.get("key", default.key)
    ok = True
    if not isinstance(key, str) or not key.strip():
        report(f"{path}.key", f"must be a non-empty template such as {default.key!r}, got {key!r}")
        ok = False
    else:
        for problem in key_template_problems(key):
            report(f"{path}.key", problem)
            ok = False
    limit = _integer(raw.get("limit", 1), f"{path}.limit", report, low=1, high=MAX_CONCURRENCY)
    if not ok or limit is None:
        return None
    return Concurrency(key=str(key), limit=limit)


def key_template_problems(template: str) -> list[str]:
    """What is wrong with a concurrency key template, if anything."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"{template!r} is not a valid template ({exc}); write fields as {{service}}"]
    problems: list[str] = []
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if not field_name or spec or conversion or not _KEY_FIELD.fullmatch(field_name):
            problems.append(
                f"{{{field_name}}} in {template!r} is not a field of the event data;"
                " write a dotted path such as {service} or {labels.team}"
            )
    return problems


def render_key(template: str, data: Mapping[str, Any]) -> str:
    """Fill a concurrency key from the trigger's data.

    Raises:
        KeyError: naming the first field the data lacks (or holds as a non-scalar).
    """
    out: list[str] = []
    for literal, field_name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field_name is None:
            continue
        value: Any = data
        for part in field_name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(field_name)
            value = value[part]
        if isinstance(value, Mapping | list) or value is None or value == "":
            raise KeyError(field_name)
        out.append(str(value))
    return "".join(out)


# --------------------------------------------------------------------------- helpers


def _duration(raw: object, path: str, report: Report, *, positive: bool = False) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        report(path, f"must be a duration such as 30s, 5m or 1h, got {kind_of(raw)}")
        return None
    try:
        seconds = durations.parse_duration(str(raw))
    except ValueError as exc:
        report(path, str(exc))
        return None
    if positive and seconds <= 0:
        report(path, f"must be longer than zero, got {raw!r}")
        return None
    return seconds


def _integer(raw: object, path: str, report: Report, *, low: int, high: int) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        report(path, f"must be a whole number from {low} to {high}, got {raw!r}")
        return None
    if not low <= raw <= high:
        report(path, f"must be from {low} to {high}, got {raw}")
        return None
    return raw


def _number(raw: object, path: str, report: Report, *, low: float, high: float) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        report(path, f"must be a number from {low:g} to {high:g}, got {raw!r}")
        return None
    if not low <= raw <= high:
        report(path, f"must be from {low:g} to {high:g}, got {raw}")
        return None
    return float(raw)


def _retry_on(raw: object, path: str, report: Report) -> frozenset[str]:
    default = Retry().on
    if raw is None:
        return default
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        report(path, f"must be a list drawn from {', '.join(RETRY_ON)}, got {raw!r}")
        return default
    chosen: set[str] = set()
    for index, item in enumerate(items):
        if item not in RETRY_ON:
            report(f"{path}[{index}]", f"must be one of {', '.join(RETRY_ON)}, got {item!r}")
        else:
            chosen.add(str(item))
    return frozenset(chosen) or default


def _backoff(raw: object, path: str, report: Report) -> Backoff:
    default = Backoff()
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        report(path, f"must be a mapping with initial/factor/max/jitter, got {kind_of(raw)}")
        return default
    _unknown_keys(raw, ("initial", "factor", "max", "jitter"), path, report)
    initial = _duration(raw.get("initial"), f"{path}.initial", report)
    ceiling = _duration(raw.get("max"), f"{path}.max", report)
    factor = _number(raw.get("factor"), f"{path}.factor", report, low=1.0, high=100.0)
    jitter = _number(raw.get("jitter"), f"{path}.jitter", report, low=0.0, high=1.0)
    initial = default.initial if initial is None else initial
    ceiling = max(default.max, initial) if ceiling is None else ceiling
    if ceiling < initial:
        report(f"{path}.max", f"must not be shorter than initial ({raw.get('initial')!r})")
    return Backoff(
        initial=initial,
        factor=default.factor if factor is None else factor,
        max=ceiling,
        jitter=default.jitter if jitter is None else jitter,
    )


def _unknown_keys(
    raw: Mapping[str, Any], known: tuple[str, ...], path: str, report: Report
) -> None:
    for key in raw:
        if key not in known:
            report(f"{path}.{key}", f"is not a known key; expected one of {', '.join(known)}")
