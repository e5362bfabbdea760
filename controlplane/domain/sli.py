"""Service level indicators: the measured values a quality gate judges.

An indicator value is what Keptn called an ``SLIResult``: the metric's name, its value, and
whether the source could produce it at all. A source that fails (down, slow, junk) still
yields a value, with ``success`` false and a message saying why, so the gate can name the
objective and the cause instead of failing as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class IndicatorValue:
    metric: str
    value: float = 0.0
    success: bool = True
    message: str = ""

    @classmethod
    def failed(cls, metric: str, message: str) -> IndicatorValue:
        return cls(metric, 0.0, False, message)

    def to_json(self) -> dict[str, Any]:
        """Keptn's ``get-sli.finished`` form: ``{metric, value, success, message}``."""
        return {
            "metric": self.metric,
            "value": self.value,
            "success": self.success,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Timeframe:
    """The window an evaluation measures, as epoch seconds (``start`` < ``end``)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start
