"""Durations written the Go way (``10s``, ``1m30s``, ``2h``, ``250ms``), as Keptn shipyards do."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Return the duration in seconds.

    Accepts Go duration strings (a sequence of number+unit pairs) and, as a convenience,
    a bare number of seconds.

    Raises:
        ValueError: the text is not a duration.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration")
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"negative duration {text!r}")
        return seconds
    position, total = 0, 0.0
    while position < len(raw):
        match = _PART.match(raw, position)
        if match is None:
            raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Render seconds compactly (``90`` -> ``1m30s``) for messages."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if secs or not text:
        text += f"{secs}s"
    return text
