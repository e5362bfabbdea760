"""The quality gate: judge indicator values against an SLO, as Keptn's lighthouse did.

:func:`judge` is the whole decision of one evaluation, pure and total: given the SLO, the
values the SLI provider returned and the indicator results of earlier evaluations, it yields
a :class:`GateOutcome` holding everything the ``evaluation.finished`` event reports. Keptn's
rules are kept to the letter because users' dashboards, chained sequences and integrations
read these events: which objectives count towards the score, how history is aggregated, the
quirks (a relative criterion passes when there is no history; a failed key SLI fails the
gate even at 100%) and the messages, whose numbers are printed the way Go's ``%v`` prints a
float64 (:func:`go_number`).

Per objective, in file order: no pass criteria makes it informational (status ``info``,
never scored); a missing or unsuccessful value fails it; otherwise the pass groups are
OR-ed (criteria inside a group AND-ed), then the warning groups, for ``pass`` (score =
weight), ``warning`` (half the weight) or ``fail`` (0). The total is the percentage of the
weights of scored objectives, compared with ``total_score``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.domain.sli import IndicatorValue
from controlplane.domain.slo import (
    SLO,
    Criterion,
    InvalidCriterion,
    InvalidSLO,
    Objective,
    aggregate,
    parse_criterion,
    parse_score_target,
)

SUCCEEDED = "succeeded"
ERRORED = "errored"
PASS = "pass"
WARNING = "warning"
FAIL = "fail"
INFO = "info"

NO_VALUE = "no value received from SLI provider"
NO_OBJECTIVES = "lighthouse failed because no SLO objective was provided"
NO_TARGET_SCORE = "no target score defined"
BAD_PASS_TARGET = "could not parse pass target percentage"
BAD_WARNING_TARGET = "could not parse warning target percentage"
KEY_SLI_SCORE_ZERO = "failed evaluation with score 0"


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """What an ``evaluation.finished`` event reports.

    ``result`` is the event's ``data.result``; ``evaluation_result`` and ``score`` are
    ``data.evaluation.result`` and ``.score``. They differ when an override (no objectives,
    a failed SLI retrieval) fails the event but keeps the computed evaluation.
    ``indicator_results`` are JSON objects in Keptn's ``SLIEvaluationResult`` shape.
    """

    status: str
    result: str
    evaluation_result: str
    score: float
    message: str
    indicator_results: tuple[dict[str, Any], ...] = ()


def go_number(value: float) -> str:
    """Print a float64 exactly as Go's ``fmt`` ``%v`` does.

    That is ``strconv``'s shortest ``%g``: the fewest digits that read back as the same
    float, without a trailing ``.0``, in exponent form (``1e+06``, ``1.5e-05``, at least two
    exponent digits) when the decimal exponent is below -4 or at least 6, the threshold Go
    uses for the shortest precision. ``NaN``, ``+Inf`` and ``-Inf`` are spelled Go's way.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0"
    digits, point = _shortest_digits(abs(value))
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """Significant digits ``d1d2...`` and point position ``p`` with value = 0.d1d2... * 10**p.

    Python's ``repr`` and Go's ``strconv`` both produce the shortest round-trip digits.
    """
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point


def no_slo_outcome(project: str) -> GateOutcome:
    return GateOutcome(
        SUCCEEDED,
        PASS,
        PASS,
        0.0,
        "no evaluation performed by lighthouse because no SLO file configured"
        f" for project {project}",
    )


def no_provider_outcome(project: str) -> GateOutcome:
    return GateOutcome(
        SUCCEEDED,
        PASS,
        PASS,
        0.0,
        "no evaluation performed by lighthouse because no SLI-provider configured"
        f" for project {project}",
    )


def errored_outcome(message: str) -> GateOutcome:
    return GateOutcome(ERRORED, FAIL, FAIL, 0.0, message)


def aborted_sli_outcome() -> GateOutcome:
    return errored_outcome("evaluation performed by lighthouse was aborted")


def errored_sli_outcome(message: str) -> GateOutcome:
    return errored_outcome(
        f"evaluation performed by lighthouse received an unexpected error: {message}"
    )


@dataclass(frozen=True, slots=True)
class _Judged:
    """One objective's result, plus what the total needs from it."""

    name: str
    json: dict[str, Any]
    score: float
    scored: bool  # has pass targets: Keptn sums only these
    key_failure: str | None = None  # the message, when a key SLI failed


@dataclass(frozen=True, slots=True)
class _Verdict:
    result: str
    score: float
    message: str = ""
    errored: bool = False


def judge(
    slo: SLO,
    values: Sequence[IndicatorValue],
    previous: Sequence[Sequence[Mapping[str, Any]]],
    *,
    sli_failure: str | None = None,
) -> GateOutcome:
    """Evaluate the SLO against the values, the way Keptn's lighthouse does.

    Args:
        slo: the parsed SLO.
        values: what the SLI provider returned (``get-sli.finished`` ``indicatorValues``).
        previous: the ``indicatorResults`` lists of earlier evaluations, newest first, as
            stored in their ``evaluation.finished`` events. Malformed entries are skipped,
            and only values with ``success: true`` are compared with.
        sli_failure: the message of a ``get-sli.finished`` with ``result: fail``; it fails
            the event's result but keeps the computed evaluation and score.

    Keptn's overrides apply in this order, the first that matches deciding the message: an
    SLO without objectives; ``sli_failure``; an unparsable pass criterion (evaluation
    ``fail``, score 0); a missing or unparsable ``total_score`` target (status errored).
    Values no objective asked for are named after the result's message.
    """
    judged, leftovers, criteria_error = _judge_objectives(slo, values, _history(previous))
    results: tuple[dict[str, Any], ...] = ()
    if criteria_error is not None:
        verdict = _Verdict(FAIL, 0.0, criteria_error)
    else:
        verdict, results = _verdict(slo, judged), tuple(item.json for item in judged)
    if not slo.objectives:
        return GateOutcome(SUCCEEDED, FAIL, verdict.result, verdict.score, NO_OBJECTIVES)
    if sli_failure is not None:
        message = f"lighthouse failed because SLI failed with message {sli_failure}"
        return GateOutcome(SUCCEEDED, FAIL, verdict.result, verdict.score, message, results)
    if verdict.errored:
        return errored_outcome(verdict.message)
    if criteria_error is None:
        message = " ".join(part for part in (verdict.message, _leftover_message(leftovers)) if part)
    else:
        message = criteria_error
    return GateOutcome(SUCCEEDED, verdict.result, verdict.result, verdict.score, message, results)


def _judge_objectives(
    slo: SLO, values: Sequence[IndicatorValue], history: Mapping[str, list[float]]
) -> tuple[list[_Judged], list[IndicatorValue], str | None]:
    """Judge each objective in file order; also the values no objective used, and an error.

    Each value is used once: the first one with the objective's metric name.
    """
    pending = list(values)
    judged: list[_Judged] = []
    for objective in slo.objectives:
        value = _take(pending, objective.sli)
        try:
            judged.append(_judge_objective(objective, value, history.get(objective.sli, []), slo))
        except InvalidCriterion as exc:
            # An unparsable pass criterion ends the evaluation (Keptn: "error with ...").
            return judged, pending, f"error with {objective.name}: {exc}"
    return judged, pending, None


def _history(previous: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, list[float]]:
    """Successful previous values per metric, in the order given (newest evaluation first)."""
    found: dict[str, list[float]] = {}
    for evaluation in previous:
        if not isinstance(evaluation, Sequence) or isinstance(evaluation, str | bytes):
            continue
        for entry in evaluation:
            value = entry.get("value") if isinstance(entry, Mapping) else None
            if not isinstance(value, Mapping) or value.get("success") is not True:
                continue
            metric, number = value.get("metric"), value.get("value")
            if not isinstance(metric, str) or isinstance(number, bool):
                continue
            if isinstance(number, int | float) and math.isfinite(number):
                found.setdefault(metric, []).append(float(number))
    return found


def _take(pending: list[IndicatorValue], metric: str) -> IndicatorValue | None:
    for index, value in enumerate(pending):
        if value.metric == metric:
            return pending.pop(index)
    return None


def _judge_objective(
    objective: Objective, value: IndicatorValue | None, previous: list[float], slo: SLO
) -> _Judged:
    compared = aggregate(previous, slo.comparison.aggregate_function)
    history = compared if previous else None
    measured = value if value is not None else IndicatorValue.failed(objective.sli, NO_VALUE)
    if objective.informational or not measured.success:
        status = INFO if objective.informational else FAIL
        key_failure = measured.message if objective.key_sli and status == FAIL else None
        pass_targets = _empty_targets(objective.pass_groups, compared)
        try:
            warning_targets = _empty_targets(objective.warning_groups, compared)
        except InvalidCriterion:
            warning_targets = None  # Keptn swallows errors in warning criteria
        return _judged(
            objective, measured, compared, status, 0.0, pass_targets, warning_targets, key_failure
        )
    passed, pass_targets = _groups(objective.pass_groups, measured.value, history)
    try:
        warned, warning_targets = _groups(objective.warning_groups, measured.value, history)
    except InvalidCriterion:
        warned, warning_targets = False, None
    weight = float(objective.weight)
    if passed:
        status, score, key_failure = PASS, weight, None
    elif warned:
        status, score, key_failure = WARNING, 0.5 * weight, None
    else:
        status, score = FAIL, 0.0
        key_failure = KEY_SLI_SCORE_ZERO if objective.key_sli else None
    return _judged(
        objective, measured, compared, status, score, pass_targets, warning_targets, key_failure
    )


def _judged(
    objective: Objective,
    measured: IndicatorValue,
    compared: float,
    status: str,
    score: float,
    pass_targets: list[dict[str, Any]] | None,
    warning_targets: list[dict[str, Any]] | None,
    key_failure: str | None,
) -> _Judged:
    json = {
        "score": score,
        "value": {
            "metric": measured.metric,
            "value": float(measured.value),
            "comparedValue": compared,
            "success": measured.success,
            "message": measured.message,
        },
        "displayName": objective.display_name,
        "passTargets": pass_targets,
        "warningTargets": warning_targets,
        "keySli": objective.key_sli,
        "status": status,
    }
    return _Judged(objective.name, json, score, bool(pass_targets), key_failure)


def _groups(
    groups: tuple[tuple[str, ...], ...], value: float, history: float | None
) -> tuple[bool, list[dict[str, Any]] | None]:
    """OR over groups of AND over criteria; every criterion is reported, none short-cut."""
    satisfied = False
    targets: list[dict[str, Any]] = []
    for group in groups:
        group_satisfied = True
        for text in group:
            criterion = parse_criterion(text)
            ok = criterion.satisfied(value, history)
            group_satisfied = group_satisfied and ok
            targets.append(_target(text, _target_value(criterion, history), violated=not ok))
        satisfied = satisfied or group_satisfied
    return satisfied, targets or None


def _target_value(criterion: Criterion, history: float | None) -> float:
    if criterion.relative and history is None:
        return 0.0  # no history: the relative criterion passes against 0
    return criterion.target(history or 0.0)


def _empty_targets(
    groups: tuple[tuple[str, ...], ...], compared: float
) -> list[dict[str, Any]] | None:
    """Targets of an objective that was not evaluated: all violated, relative ones unadjusted.

    Keptn shows the raw aggregate of previous values for a relative criterion here, without
    applying its ``+10%`` or ``-5``.
    """
    targets: list[dict[str, Any]] = []
    for group in groups:
        for text in group:
            criterion = parse_criterion(text)
            shown = compared if criterion.relative else criterion.amount
            targets.append(_target(text, shown, violated=True))
    return targets or None


def _target(text: str, target_value: float, *, violated: bool) -> dict[str, Any]:
    return {"criteria": text, "targetValue": target_value, "violated": violated}


def _verdict(slo: SLO, judged: Sequence[_Judged]) -> _Verdict:
    maximum = float(sum(o.weight for o in slo.objectives if not o.informational))
    if maximum == 0:
        return _Verdict(PASS, 100.0)  # only informational objectives
    total = 0.0
    for item in judged:
        if item.scored:
            total += item.score
    score = 100.0 * (total / maximum)  # Keptn's order of operations, for identical rounding
    if slo.total_score.pass_target is None:
        return _Verdict(FAIL, score, NO_TARGET_SCORE, errored=True)
    pass_target = _score_target(slo.total_score.pass_target)
    if pass_target is None:
        return _Verdict(FAIL, score, BAD_PASS_TARGET, errored=True)
    key = next((item for item in judged if item.key_failure is not None), None)
    if score >= pass_target and key is None:
        return _Verdict(PASS, score)
    if slo.total_score.warning_target is not None and key is None:
        return _warning_verdict(score, slo.total_score.warning_target)
    if key is not None:
        reason = f"Evaluation failed due to key_sli objective '{key.name}': {key.key_failure}"
        return _Verdict(FAIL, score, reason)
    return _Verdict(
        FAIL,
        score,
        f"Evaluation failed since the calculated score of {go_number(score)} is below the"
        f" target value of {go_number(pass_target)}",
    )


def _warning_verdict(score: float, warning_text: str) -> _Verdict:
    # Keptn parses the warning target only when it is needed.
    warning_target = _score_target(warning_text)
    if warning_target is None:
        return _Verdict(FAIL, score, BAD_WARNING_TARGET, errored=True)
    shown, target = go_number(score), go_number(warning_target)
    if score >= warning_target:
        return _Verdict(
            WARNING,
            score,
            f"Evaluation returned a warning: the calculated score of {shown} is close to"
            f" the warning target value of {target}",
        )
    return _Verdict(
        FAIL,
        score,
        f"Evaluation failed since the calculated score of {shown} is below the warning"
        f" value of {target}",
    )


def _score_target(text: str) -> float | None:
    try:
        return parse_score_target(text)
    except InvalidSLO:
        return None


def _leftover_message(pending: Sequence[IndicatorValue]) -> str:
    if not pending:
        return ""
    names = ", ".join(value.metric for value in pending)
    return (
        f"Lighthouse received additional SLIs, which are not specified as SLO: {names} ."
        " Please consider using them as an SLO."
    )
