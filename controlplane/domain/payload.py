"""Keptn's payload rules: deep merge and the data handed to the next task.

``merge(a, b)``: mappings merge recursively with ``b`` winning conflicts; lists become
``b``'s items followed by ``a``'s (newest first, Keptn issue #7627); any other clash is won
by ``b``. Inputs are never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge(base: Any, update: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        merged = {key: _copy(value) for key, value in base.items()}
        for key, value in update.items():
            merged[key] = merge(merged[key], value) if key in merged else _copy(value)
        return merged
    if isinstance(base, list) and isinstance(update, list):
        return [_copy(item) for item in update] + [_copy(item) for item in base]
    return _copy(update)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def deep_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _copy(item) for key, item in value.items()}
