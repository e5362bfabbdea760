"""Service level objectives: the ``slo.yaml`` a quality gate judges indicator values against.

An SLO file names the indicators to fetch (``objectives[].sli``), how each is judged
(``pass`` and ``warning`` criteria groups), how heavily it counts (``weight``, ``key_sli``),
how earlier evaluations are compared (``comparison``) and the total score needed
(``total_score``). The document arrives as a plain mapping (parsed from YAML by an adapter)
and leaves :func:`parse_slo` as frozen dataclasses with Keptn's defaults applied, or as an
:class:`InvalidSLO` listing every structural problem with its field path.

Criteria strings (``"<=+10%"``, ``"<600"``) are deliberately *not* parsed by
:func:`parse_slo`: Keptn parses them while evaluating, and an unparsable criterion is a gate
result there (``error with <objective>: ...``), not an unreadable file. The same goes for the
``total_score`` targets. :func:`criteria_problems` finds both ahead of time, for validation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain.errors import DomainError, InvalidConfiguration, Problem, kind_of

OPERATORS = ("<=", "<", "=", ">=", ">")  # Keptn tries them in this order (a prefix match)
COMPARE_WITH = ("single_result", "several_results")
INCLUDE_RESULT_WITH_SCORE = ("pass", "pass_or_warn", "all")
AGGREGATE_FUNCTIONS = ("avg", "p50", "p90", "p95")
_PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95}
_AMOUNT = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SCORE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_EXAMPLES = "'<600', '<=+10%' or '>-5'"


class InvalidSLO(InvalidConfiguration):
    """The SLO file is invalid."""


class InvalidCriterion(DomainError):
    """A criterion is not an operator followed by a number."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"criterion {text!r}: {reason}")


@dataclass(frozen=True, slots=True)
class Criterion:
    """One parsed criterion such as ``<=+10%``.

    ``amount`` carries the sign of a relative criterion (``-5%`` has amount ``-5``), so the
    target is always ``aggregate * (100 + amount) / 100`` or ``aggregate + amount``. An
    absolute threshold is never negative: a leading ``-`` makes a criterion relative.
    """

    text: str
    operator: str
    amount: float
    relative: bool = False
    percent: bool = False

    def target(self, aggregate: float) -> float:
        """The threshold the measured value is compared with, given the previous aggregate."""
        if not self.relative:
            return self.amount
        if self.percent:
            return aggregate * (100.0 + self.amount) / 100.0
        return aggregate + self.amount

    def satisfied(self, value: float, aggregate: float | None) -> bool:
        """Whether ``value <operator> target`` holds.

        Args:
            value: the measured value.
            aggregate: the aggregate of previous successful values, or None when there are
                none; Keptn lets every relative criterion pass then.
        """
        if self.relative and aggregate is None:
            return True
        return _compare(value, self.operator, self.target(aggregate or 0.0))


def _compare(value: float, operator: str, target: float) -> bool:
    if operator == "<=":
        return value <= target
    if operator == "<":
        return value < target
    if operator == "=":
        return value == target
    if operator == ">=":
        return value >= target
    if operator == ">":
        return value > target
    raise ValueError(f"unknown operator {operator!r}")


def parse_criterion(text: str) -> Criterion:
    """Parse a criterion the way Keptn's lighthouse does.

    Spaces are removed, then the text must start with ``<=``, ``<``, ``=``, ``>=`` or ``>``
    (tried in that order, so ``=>5`` and ``==5`` are rejected: ``=`` matches and ``>5`` is
    no number). A trailing ``%`` makes the criterion relative (an increase unless the number
    starts with ``-``: ``<10%`` means ``<+10%``); a leading ``+`` or ``-`` without ``%`` is a
    relative absolute delta; otherwise it is an absolute threshold.

    Raises:
        InvalidCriterion: naming the text and what is wrong.
    """
    compact = "".join(text.split())
    if not compact:
        raise InvalidCriterion(
            text, f"is empty; write an operator and a number such as {_EXAMPLES}"
        )
    operator = next((op for op in OPERATORS if compact.startswith(op)), None)
    if operator is None:
        raise InvalidCriterion(text, f"must start with one of {', '.join(OPERATORS)}")
    rest = compact[len(operator) :]
    percent = rest.endswith("%")
    number = rest[:-1] if percent else rest
    sign = number[:1] if number[:1] in ("+", "-") else ""
    digits = number[len(sign) :]
    if not _AMOUNT.fullmatch(digits):
        shown = repr(rest) if rest else "nothing"
        raise InvalidCriterion(
            text, f"{operator!r} must be followed by a number, got {shown} (e.g. {_EXAMPLES})"
        )
    amount = float(digits)
    return Criterion(
        text=text,
        operator=operator,
        amount=-amount if sign == "-" else amount,
        relative=percent or bool(sign),
        percent=percent,
    )


@dataclass(frozen=True, slots=True)
class Objective:
    sli: str
    display_name: str = ""
    key_sli: bool = False
    weight: int = 1
    # Groups are OR-ed; the criteria strings inside one group are AND-ed.
    pass_groups: tuple[tuple[str, ...], ...] = ()
    warning_groups: tuple[tuple[str, ...], ...] = ()

    @property
    def name(self) -> str:
        return self.display_name or self.sli

    @property
    def informational(self) -> bool:
        """No pass criteria: the value is reported (status ``info``) but never scored."""
        return not self.pass_groups


@dataclass(frozen=True, slots=True)
class Comparison:
    compare_with: str = "single_result"
    include_result_with_score: str = "all"
    number_of_comparison_results: int = 1
    aggregate_function: str = "avg"

    @property
    def results_to_fetch(self) -> int:
        """How many previous evaluations to compare with.

        ``single_result`` fetches one whatever ``number_of_comparison_results`` says, and an
        empty or unknown ``compare_with`` fetches three (Keptn's rules).
        """
        if self.compare_with == "single_result":
            return 1
        if self.compare_with == "several_results":
            return self.number_of_comparison_results
        return 3

    @property
    def result_filter(self) -> tuple[str, ...]:
        """The ``data.result`` values previous evaluations must have; empty means any."""
        if self.include_result_with_score == "pass":
            return ("pass",)
        if self.include_result_with_score == "pass_or_warn":
            return ("pass", "warning")
        return ()


@dataclass(frozen=True, slots=True)
class TotalScore:
    """The raw ``total_score`` targets (``"90%"``, ``"90"``); parsed when a gate is judged."""

    pass_target: str | None = None
    warning_target: str | None = None


@dataclass(frozen=True, slots=True)
class SLO:
    objectives: tuple[Objective, ...] = ()
    total_score: TotalScore = field(default_factory=TotalScore)
    comparison: Comparison = field(default_factory=Comparison)
    filter: Mapping[str, str] = field(default_factory=dict)
    spec_version: str = ""

    @property
    def indicators(self) -> tuple[str, ...]:
        """The SLI names to request from the provider, in file order."""
        return tuple(objective.sli for objective in self.objectives)


def aggregate(values: Sequence[float], function: str) -> float:
    """Aggregate previous values with ``avg``, ``p50``, ``p90`` or ``p95``; empty gives 0.

    The percentiles use Keptn's rule: sort ascending, ``pos = p * (n + 1)``; below 1 take the
    minimum, from ``n`` on the maximum, otherwise interpolate linearly between the values
    at (1-based) positions ``floor(pos)`` and ``floor(pos) + 1``.
    """
    if not values:
        return 0.0
    if function == "avg":
        total = 0.0
        for value in values:
            total += value
        return total / len(values)
    if function not in _PERCENTILES:
        raise ValueError(f"unknown aggregate function {function!r}")
    return percentile(values, _PERCENTILES[function])


def percentile(values: Sequence[float], fraction: float) -> float:
    """Keptn's percentile (``fraction`` 0.5 for p50); see :func:`aggregate`."""
    if not values:
        return 0.0
    ordered = sorted(values)
    size = len(ordered)
    position = fraction * float(size + 1)
    if position < 1.0:
        return ordered[0]
    if position >= float(size):
        return ordered[-1]
    lower, upper = ordered[int(position) - 1], ordered[int(position)]
    return lower + (position - math.floor(position)) * (upper - lower)


def parse_score_target(text: str, *, path: str = "total_score") -> float:
    """Parse a total score target such as ``"90%"``, ``"90"`` or ``" 90 % "``.

    Raises:
        InvalidSLO: naming ``path`` and the text.
    """
    compact = text.strip()
    if compact.endswith("%"):
        compact = compact[:-1].rstrip()
    if not _SCORE.fullmatch(compact):
        raise InvalidSLO([Problem(path, f"must be a percentage such as '90%', got {text!r}")])
    return float(compact)


def criteria_problems(slo: SLO) -> list[str]:
    """Every criterion and score target a gate would fail to parse, each with its path.

    Objective indices count the objectives kept by :func:`parse_slo` (null entries dropped).
    """
    found: list[str] = []
    for index, objective in enumerate(slo.objectives):
        for kind, groups in (
            ("pass", objective.pass_groups),
            ("warning", objective.warning_groups),
        ):
            for g_index, group in enumerate(groups):
                for c_index, text in enumerate(group):
                    try:
                        parse_criterion(text)
                    except InvalidCriterion as exc:
                        path = f"objectives[{index}].{kind}[{g_index}].criteria[{c_index}]"
                        found.append(f"{path}: {exc}")
    targets = (("pass", slo.total_score.pass_target), ("warning", slo.total_score.warning_target))
    for name, target in targets:
        if target is None:
            continue
        try:
            parse_score_target(target, path=f"total_score.{name}")
        except InvalidSLO as exc:
            found.append(str(exc))
    return found


class _Problems:
    def __init__(self, lines: Mapping[str, int] | None) -> None:
        self.found: list[Problem] = []
        self._lines = lines or {}

    def add(self, path: str, message: str) -> None:
        self.found.append(Problem(path, message, self._line(path)))

    def _line(self, path: str) -> int | None:
        probe = path
        while probe:
            if probe in self._lines:
                return self._lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self._lines.get("")


def parse_slo(
    document: Mapping[str, Any] | None,
    *,
    source: str = "",
    lines: Mapping[str, int] | None = None,
) -> SLO:
    """Turn a parsed ``slo.yaml`` into an :class:`SLO`, with Keptn's defaults.

    Defaults: no ``comparison`` block means single_result / all / 1 / avg; inside a block an
    empty ``include_result_with_score`` is ``all``, a zero or missing
    ``number_of_comparison_results`` is 3 (not 1) and an empty ``aggregate_function`` is
    ``avg``, while ``compare_with`` stays as written. Null objectives are dropped and a zero or
    missing weight counts as 1. An empty document is an SLO without objectives.

    Args:
        document: the mapping read from the file, or None for an empty file.
        source: where it came from (a file name), used in messages.
        lines: optional map from field path (``objectives[0].weight``) to YAML line.

    Raises:
        InvalidSLO: listing every structural problem, each with its field path.
    """
    out = _Problems(lines)
    if document is None:
        return SLO()
    if not isinstance(document, Mapping):
        out.add("", f"an SLO file is a mapping with 'objectives', got {kind_of(document)}")
        raise InvalidSLO(out.found, source)
    slo = SLO(
        objectives=_objectives(document.get("objectives"), out),
        total_score=_total_score(document.get("total_score"), out),
        comparison=_comparison(document.get("comparison"), out),
        filter=_filter(document.get("filter"), out),
        spec_version=_scalar_text(document.get("spec_version"), "spec_version", out) or "",
    )
    if out.found:
        raise InvalidSLO(out.found, source)
    return slo


def _objectives(raw: object, out: _Problems) -> tuple[Objective, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        out.add("objectives", f"must be a list of objectives, got {kind_of(raw)}")
        return ()
    objectives: list[Objective] = []
    for index, item in enumerate(raw):
        if item is None:
            continue  # Keptn drops null entries
        path = f"objectives[{index}]"
        if not isinstance(item, Mapping):
            out.add(path, f"an objective is a mapping with 'sli', got {kind_of(item)}")
            continue
        objective = _objective(item, path, out)
        if objective is not None:
            objectives.append(objective)
    return tuple(objectives)


def _objective(item: Mapping[str, Any], path: str, out: _Problems) -> Objective | None:
    sli = item.get("sli")
    if not isinstance(sli, str) or not sli.strip():
        out.add(f"{path}.sli", f"every objective needs the name of its SLI, got {sli!r}")
        sli = ""
    display_name = item.get("displayName")
    if display_name is not None and not isinstance(display_name, str):
        out.add(f"{path}.displayName", f"must be a string, got {kind_of(display_name)}")
        display_name = None
    key_sli = item.get("key_sli", False)
    if key_sli is None:
        key_sli = False
    if not isinstance(key_sli, bool):
        out.add(f"{path}.key_sli", f"must be true or false, got {key_sli!r}")
        key_sli = False
    objective = Objective(
        sli=sli,
        display_name=display_name or "",
        key_sli=key_sli,
        weight=_weight(item.get("weight"), f"{path}.weight", out),
        pass_groups=_groups(item.get("pass"), f"{path}.pass", out),
        warning_groups=_groups(item.get("warning"), f"{path}.warning", out),
    )
    return objective if sli else None


def _weight(raw: object, path: str, out: _Problems) -> int:
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, int):
        out.add(path, f"must be a whole number, got {raw!r}")
        return 1
    if raw < 0:
        # Keptn took it, but a negative weight lets the score leave 0..100.
        out.add(path, f"must not be negative, got {raw}")
        return 1
    return raw or 1  # Keptn: weight 0 counts as 1


def _groups(raw: object, path: str, out: _Problems) -> tuple[tuple[str, ...], ...]:
    if raw is None:
        return ()
    shape = "a list of {criteria: [...]} groups"
    if not isinstance(raw, list):
        out.add(path, f"must be {shape}, got {kind_of(raw)}")
        return ()
    groups: list[tuple[str, ...]] = []
    for index, item in enumerate(raw):
        group_path = f"{path}[{index}]"
        if not isinstance(item, Mapping) or "criteria" not in item:
            out.add(group_path, f"must be a mapping with a 'criteria' list, got {kind_of(item)}")
            continue
        criteria = item["criteria"]
        if criteria is None:
            criteria = []
        if not isinstance(criteria, list):
            out.add(f"{group_path}.criteria", f"must be a list of strings, got {kind_of(criteria)}")
            continue
        texts: list[str] = []
        for c_index, text in enumerate(criteria):
            if not isinstance(text, str):
                out.add(
                    f"{group_path}.criteria[{c_index}]",
                    f"must be a string such as {_EXAMPLES}, got {text!r}",
                )
                continue
            texts.append(text)
        groups.append(tuple(texts))
    return tuple(groups)


def _total_score(raw: object, out: _Problems) -> TotalScore:
    if raw is None:
        return TotalScore()
    if not isinstance(raw, Mapping):
        out.add("total_score", f"must be a mapping with 'pass' and 'warning', got {kind_of(raw)}")
        return TotalScore()
    # An empty target is no target, as in Keptn.
    return TotalScore(
        pass_target=_scalar_text(raw.get("pass"), "total_score.pass", out) or None,
        warning_target=_scalar_text(raw.get("warning"), "total_score.warning", out) or None,
    )


def _comparison(raw: object, out: _Problems) -> Comparison:
    if raw is None:
        return Comparison()
    if not isinstance(raw, Mapping):
        out.add("comparison", f"must be a mapping, got {kind_of(raw)}")
        return Comparison()
    compare_with = _choice(raw, "compare_with", ("", *COMPARE_WITH), out)
    include = _choice(raw, "include_result_with_score", ("", *INCLUDE_RESULT_WITH_SCORE), out)
    function = _choice(raw, "aggregate_function", ("", *AGGREGATE_FUNCTIONS), out)
    return Comparison(
        compare_with=compare_with,
        include_result_with_score=include or "all",
        number_of_comparison_results=_count(raw.get("number_of_comparison_results"), out) or 3,
        aggregate_function=function or "avg",
    )


def _choice(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], out: _Problems) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or value not in allowed:
        names = ", ".join(choice for choice in allowed if choice)
        out.add(f"comparison.{key}", f"must be one of {names}, got {value!r}")
        return ""
    return value


def _count(raw: object, out: _Problems) -> int:
    path = "comparison.number_of_comparison_results"
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int):
        out.add(path, f"must be a whole number, got {raw!r}")
        return 0
    if raw < 0:
        out.add(path, f"must not be negative, got {raw}")
        return 0
    return raw


def _filter(raw: object, out: _Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        out.add("filter", f"must be a mapping of names to strings, got {kind_of(raw)}")
        return {}
    found: dict[str, str] = {}
    for key, value in raw.items():
        text = _scalar_text(value, f"filter.{key}", out, allow_none=False)
        if text is not None:
            found[str(key)] = text
    return found


def _scalar_text(raw: object, path: str, out: _Problems, *, allow_none: bool = True) -> str | None:
    """A string field; YAML numbers and booleans become their text, as Keptn's loader did."""
    if raw is None and allow_none:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    out.add(path, f"must be a string, got {kind_of(raw)}")
    return None
