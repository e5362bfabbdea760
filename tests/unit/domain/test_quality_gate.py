from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain.quality_gate import (
    GateOutcome,
    aborted_sli_outcome,
    errored_outcome,
    errored_sli_outcome,
    go_number,
    judge,
    no_provider_outcome,
    no_slo_outcome,
)
from controlplane.domain.sli import IndicatorValue
from controlplane.domain.slo import SLO, parse_slo

V = IndicatorValue
NO_VALUE = "no value received from SLI provider"


def gate(
    *items: dict[str, Any],
    passing: str | None = "90%",
    warning: str | None = "75%",
    comparison: dict[str, Any] | None = None,
) -> SLO:
    document: dict[str, Any] = {
        "objectives": list(items),
        "total_score": {"pass": passing, "warning": warning},
    }
    if comparison is not None:
        document["comparison"] = comparison
    return parse_slo(document)


def objective(
    sli: str,
    *passing: list[str],
    warning: Sequence[list[str]] = (),
    weight: int | None = None,
    key: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"sli": sli, "key_sli": key}
    if passing:
        item["pass"] = [{"criteria": group} for group in passing]
    if warning:
        item["warning"] = [{"criteria": group} for group in warning]
    if weight is not None:
        item["weight"] = weight
    if name is not None:
        item["displayName"] = name
    return item


def history(*evaluations: dict[str, float]) -> list[list[dict[str, Any]]]:
    """Earlier evaluations, newest first, as ``indicatorResults`` lists."""
    return [
        [
            {"value": {"metric": metric, "value": value, "success": True}, "status": "pass"}
            for metric, value in evaluation.items()
        ]
        for evaluation in evaluations
    ]


def indicator(outcome: GateOutcome, index: int = 0) -> dict[str, Any]:
    return outcome.indicator_results[index]


def target(criteria: str, value: float, violated: bool) -> dict[str, Any]:
    return {"criteria": criteria, "targetValue": value, "violated": violated}


# --- go_number --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (74.0, "74"),
        (75.3, "75.3"),
        (100.0, "100"),
        (-3.5, "-3.5"),
        (66.66666666666667, "66.66666666666667"),
        (0.1 + 0.2, "0.30000000000000004"),
        (83.33333333333334, "83.33333333333334"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (1e-05, "1e-05"),
        (1.5e-05, "1.5e-05"),
        (-2.5e-07, "-2.5e-07"),
        (999999.0, "999999"),
        (123456.5, "123456.5"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (12345678.9, "1.23456789e+07"),
        (1e20, "1e+20"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_go_number(value: float, text: str) -> None:
    assert go_number(value) == text


GO_SHAPE = re.compile(
    r"-?(0|[1-9]\d*)(\.\d*[1-9])?|-?0\.0{0,3}[1-9]\d*|-?[1-9](\.\d*[1-9])?e[+-]\d{2,3}"
)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_number_round_trips(value: float) -> None:
    text = go_number(value)
    assert float(text) == value
    assert math.copysign(1.0, float(text)) == math.copysign(1.0, value)
    assert GO_SHAPE.fullmatch(text), text
    assert not text.endswith(".0")


@given(st.integers(-(10**5), 10**5))
def test_go_number_prints_small_integers_plainly(number: int) -> None:
    assert go_number(float(number)) == str(number)


# --- no-evaluation outcomes -------------------------------------------------------------


def test_no_slo_outcome() -> None:
    assert no_slo_outcome("sockshop") == GateOutcome(
        "succeeded",
        "pass",
        "pass",
        0.0,
        "no evaluation performed by lighthouse because no SLO file configured for project sockshop",
    )


def test_no_provider_outcome() -> None:
    assert no_provider_outcome("sockshop") == GateOutcome(
        "succeeded",
        "pass",
        "pass",
        0.0,
        "no evaluation performed by lighthouse because no SLI-provider configured for project"
        " sockshop",
    )


def test_errored_outcomes() -> None:
    assert errored_outcome("boom") == GateOutcome("errored", "fail", "fail", 0.0, "boom")
    assert aborted_sli_outcome() == GateOutcome(
        "errored", "fail", "fail", 0.0, "evaluation performed by lighthouse was aborted"
    )
    assert errored_sli_outcome("timeout") == GateOutcome(
        "errored",
        "fail",
        "fail",
        0.0,
        "evaluation performed by lighthouse received an unexpected error: timeout",
    )


# --- one objective ----------------------------------------------------------------------


def test_absolute_pass_in_keptn_shape() -> None:
    outcome = judge(gate(objective("rt", ["<600"], name="Response time")), [V("rt", 500.0)], [])
    assert outcome == GateOutcome(
        "succeeded",
        "pass",
        "pass",
        100.0,
        "",
        (
            {
                "score": 1.0,
                "value": {
                    "metric": "rt",
                    "value": 500.0,
                    "comparedValue": 0.0,
                    "success": True,
                    "message": "",
                },
                "displayName": "Response time",
                "passTargets": [target("<600", 600.0, False)],
                "warningTargets": None,
                "keySli": False,
                "status": "pass",
            },
        ),
    )


def test_absolute_fail() -> None:
    outcome = judge(gate(objective("rt", ["<600"])), [V("rt", 600.0)], [])
    assert indicator(outcome)["status"] == "fail"
    assert indicator(outcome)["score"] == 0.0
    assert indicator(outcome)["passTargets"] == [target("<600", 600.0, True)]
    assert (outcome.result, outcome.score) == ("fail", 0.0)
    assert outcome.message == (
        "Evaluation failed since the calculated score of 0 is below the warning value of 75"
    )


def test_relative_criteria_pass_without_history_with_target_zero() -> None:
    outcome = judge(gate(objective("rt", ["<=+10%", "<-50%"])), [V("rt", 1e6)], [])
    assert indicator(outcome)["passTargets"] == [
        target("<=+10%", 0.0, False),
        target("<-50%", 0.0, False),
    ]
    assert indicator(outcome)["value"]["comparedValue"] == 0.0
    assert outcome.result == "pass"


def test_relative_criteria_against_the_average_of_history() -> None:
    previous = history({"rt": 500.0}, {"rt": 300.0})  # avg 400, +10% -> 440
    passed = judge(gate(objective("rt", ["<=+10%"])), [V("rt", 440.0)], previous)
    assert indicator(passed)["passTargets"] == [target("<=+10%", 440.0, False)]
    assert indicator(passed)["value"]["comparedValue"] == 400.0
    failed = judge(gate(objective("rt", ["<=+10%"])), [V("rt", 441.0)], previous)
    assert indicator(failed)["passTargets"] == [target("<=+10%", 440.0, True)]
    assert indicator(failed)["status"] == "fail"


@pytest.mark.parametrize(
    ("criterion", "value", "target_value", "violated"),
    [
        ("<=-10%", 360.0, 360.0, False),  # 400 * 90 / 100
        ("<=-10%", 361.0, 360.0, True),
        ("<=+5", 405.0, 405.0, False),
        (">-5", 395.0, 395.0, True),
        (">=-5", 395.0, 395.0, False),
        ("=+0", 400.0, 400.0, False),
        ("<600", 599.0, 600.0, False),  # absolute: history does not matter
    ],
)
def test_relative_targets(
    criterion: str, value: float, target_value: float, violated: bool
) -> None:
    previous = history({"rt": 400.0})
    outcome = judge(gate(objective("rt", [criterion])), [V("rt", value)], previous)
    assert indicator(outcome)["passTargets"] == [target(criterion, target_value, violated)]


@pytest.mark.parametrize(
    ("function", "compared"),
    [
        ("avg", 30.0),  # (10 + 50 + 20 + 40 + 30) / 5
        ("p50", 30.0),  # pos 3.0
        ("p90", 50.0),  # pos 5.4 >= 5
        ("p95", 50.0),
    ],
)
def test_aggregate_function_of_the_comparison(function: str, compared: float) -> None:
    previous = history({"rt": 10.0}, {"rt": 50.0}, {"rt": 20.0}, {"rt": 40.0}, {"rt": 30.0})
    slo = gate(
        objective("rt", ["<=+0%"]),
        comparison={"compare_with": "several_results", "aggregate_function": function},
    )
    outcome = judge(slo, [V("rt", 1.0)], previous)
    assert indicator(outcome)["value"]["comparedValue"] == compared
    assert indicator(outcome)["passTargets"] == [target("<=+0%", compared, False)]


def test_p50_interpolates_history() -> None:
    previous = history({"rt": 10.0}, {"rt": 20.0})  # pos 1.5 -> 15
    slo = gate(objective("rt", ["<=+0%"]), comparison={"aggregate_function": "p50"})
    outcome = judge(slo, [V("rt", 16.0)], previous)
    assert indicator(outcome)["value"]["comparedValue"] == 15.0
    assert indicator(outcome)["passTargets"] == [target("<=+0%", 15.0, True)]


def test_history_takes_only_successful_well_formed_values() -> None:
    previous: list[Any] = [
        [
            {"value": {"metric": "rt", "value": 100.0, "success": True}},
            {"value": {"metric": "rt", "value": 9999.0, "success": False}},
            {"value": {"metric": "other", "value": 5000.0, "success": True}},
            {"value": None},
            {"value": {"metric": "rt", "value": "300", "success": True}},
            {"value": {"metric": "rt", "value": True, "success": True}},
            {"value": {"metric": "rt", "success": True}},
            {"value": {"metric": "rt", "value": 7000.0}},
            {"value": {"metric": "rt", "value": 8000.0, "success": "true"}},
            {"value": {"value": 100.0, "success": True}},
            {"value": {"metric": "rt", "value": float("nan"), "success": True}},
            {"noValue": 1},
            "garbage",
            None,
        ],
        "not a list",
        None,
        [{"value": {"metric": "rt", "value": 300, "success": True}}],
    ]
    outcome = judge(gate(objective("rt", ["<=+0%"])), [V("rt", 1.0)], previous)
    assert indicator(outcome)["value"]["comparedValue"] == 200.0  # (100 + 300) / 2


def test_history_without_successful_values_lets_relative_criteria_pass() -> None:
    previous = [[{"value": {"metric": "rt", "value": 1.0, "success": False}}]]
    outcome = judge(gate(objective("rt", ["<-50%"])), [V("rt", 100.0)], previous)
    assert indicator(outcome)["passTargets"] == [target("<-50%", 0.0, False)]
    assert indicator(outcome)["value"]["comparedValue"] == 0.0
    assert outcome.result == "pass"


def test_history_of_other_metrics_does_not_count() -> None:
    outcome = judge(gate(objective("rt", ["<-50%"])), [V("rt", 100.0)], history({"cpu": 1.0}))
    assert indicator(outcome)["passTargets"] == [target("<-50%", 0.0, False)]


# --- groups -----------------------------------------------------------------------------


def test_groups_are_ored_and_every_target_reported() -> None:
    outcome = judge(gate(objective("rt", ["<100"], ["<600", ">400"])), [V("rt", 500.0)], [])
    assert indicator(outcome)["status"] == "pass"
    assert indicator(outcome)["passTargets"] == [
        target("<100", 100.0, True),
        target("<600", 600.0, False),
        target(">400", 400.0, False),
    ]


def test_criteria_within_a_group_are_anded() -> None:
    outcome = judge(gate(objective("rt", ["<600", ">550"])), [V("rt", 500.0)], [])
    assert indicator(outcome)["status"] == "fail"
    assert indicator(outcome)["passTargets"] == [
        target("<600", 600.0, False),
        target(">550", 550.0, True),
    ]


def test_a_satisfied_first_group_still_reports_the_others() -> None:
    outcome = judge(gate(objective("rt", ["<600"], [">1000"])), [V("rt", 500.0)], [])
    assert indicator(outcome)["passTargets"] == [
        target("<600", 600.0, False),
        target(">1000", 1000.0, True),
    ]


def test_warning_scores_half_the_weight() -> None:
    slo = gate(
        objective("a", ["<10"], warning=[["<20"]], weight=3),
        objective("b", ["<10"]),
    )
    outcome = judge(slo, [V("a", 15.0), V("b", 5.0)], [])
    assert indicator(outcome, 0)["status"] == "warning"
    assert indicator(outcome, 0)["score"] == 1.5
    assert indicator(outcome, 0)["passTargets"] == [target("<10", 10.0, True)]
    assert indicator(outcome, 0)["warningTargets"] == [target("<20", 20.0, False)]
    assert outcome.score == 62.5  # (1.5 + 1) / 4
    assert outcome.message == (
        "Evaluation failed since the calculated score of 62.5 is below the warning value of 75"
    )


def test_warning_targets_are_reported_when_pass_holds() -> None:
    outcome = judge(gate(objective("a", ["<10"], warning=[["<20"]])), [V("a", 5.0)], [])
    assert indicator(outcome)["status"] == "pass"
    assert indicator(outcome)["warningTargets"] == [target("<20", 20.0, False)]


def test_neither_pass_nor_warning() -> None:
    outcome = judge(gate(objective("a", ["<10"], warning=[["<20"]])), [V("a", 25.0)], [])
    assert indicator(outcome)["status"] == "fail"
    assert indicator(outcome)["warningTargets"] == [target("<20", 20.0, True)]


def test_empty_criteria_group_passes_but_does_not_count() -> None:
    # Keptn sums only results with pass targets, while max_score counts every scored weight.
    slo = gate(objective("a", []), objective("b", ["<10"]), passing="50%")
    outcome = judge(slo, [V("a", 1.0), V("b", 1.0)], [])
    assert indicator(outcome, 0)["status"] == "pass"
    assert indicator(outcome, 0)["score"] == 1.0
    assert indicator(outcome, 0)["passTargets"] is None
    assert outcome.score == 50.0
    assert outcome.result == "pass"


# --- score and result -------------------------------------------------------------------


def four(passing: int, *, warning: str | None = "75%", pass_target: str = "90%") -> GateOutcome:
    items = [objective(f"m{i}", ["<10"]) for i in range(4)]
    values = [V(f"m{i}", 1.0 if i < passing else 99.0) for i in range(4)]
    return judge(gate(*items, passing=pass_target, warning=warning), values, [])


def test_weights_divide_the_score() -> None:
    slo = gate(objective("a", ["<10"], weight=2), objective("b", ["<10"]))
    outcome = judge(slo, [V("a", 1.0), V("b", 50.0)], [])
    # Keptn computes 100 * (2 / 3) = 66.66666666666666, not 200 / 3 = 66.66666666666667.
    assert outcome.score == 66.66666666666666
    assert outcome.message == (
        "Evaluation failed since the calculated score of 66.66666666666666 is below the warning"
        " value of 75"
    )


def test_score_at_the_pass_target_passes() -> None:
    outcome = four(3, pass_target="75%")
    assert (outcome.result, outcome.evaluation_result, outcome.score) == ("pass", "pass", 75.0)
    assert outcome.message == ""


def test_score_at_the_warning_target_warns() -> None:
    outcome = four(3)
    assert (outcome.status, outcome.result, outcome.evaluation_result) == (
        "succeeded",
        "warning",
        "warning",
    )
    assert outcome.message == (
        "Evaluation returned a warning: the calculated score of 75 is close to the warning"
        " target value of 75"
    )


def test_score_below_the_warning_target_fails() -> None:
    outcome = four(2)
    assert (outcome.result, outcome.score) == ("fail", 50.0)
    assert outcome.message == (
        "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    )


def test_without_warning_target_below_pass_fails() -> None:
    outcome = four(3, warning=None)
    assert (outcome.result, outcome.score) == ("fail", 75.0)
    assert outcome.message == (
        "Evaluation failed since the calculated score of 75 is below the target value of 90"
    )


def test_targets_without_percent_sign_and_with_fractions() -> None:
    outcome = four(3, pass_target=" 75.3 % ", warning="74")
    assert outcome.message == (
        "Evaluation returned a warning: the calculated score of 75 is close to the warning"
        " target value of 74"
    )
    outcome = four(2, pass_target="90", warning="75.3%")
    assert outcome.message == (
        "Evaluation failed since the calculated score of 50 is below the warning value of 75.3"
    )


def test_all_pass() -> None:
    outcome = four(4)
    assert (outcome.status, outcome.result, outcome.score, outcome.message) == (
        "succeeded",
        "pass",
        100.0,
        "",
    )


def test_total_score_pass_missing_errors() -> None:
    outcome = judge(gate(objective("a", ["<10"]), passing=None), [V("a", 1.0)], [])
    assert outcome == GateOutcome("errored", "fail", "fail", 0.0, "no target score defined")


def test_total_score_pass_unparsable_errors() -> None:
    outcome = judge(gate(objective("a", ["<10"]), passing="ninety"), [V("a", 1.0)], [])
    assert outcome == GateOutcome(
        "errored", "fail", "fail", 0.0, "could not parse pass target percentage"
    )


def test_unparsable_warning_target_errors_only_when_needed() -> None:
    slo = gate(objective("a", ["<10"]), warning="high")
    assert judge(slo, [V("a", 1.0)], []).result == "pass"
    assert judge(slo, [V("a", 11.0)], []) == GateOutcome(
        "errored", "fail", "fail", 0.0, "could not parse warning target percentage"
    )


# --- informational objectives -----------------------------------------------------------


def test_info_objective_is_reported_but_not_scored() -> None:
    slo = gate(objective("rt", ["<10"]), objective("throughput"))
    outcome = judge(slo, [V("rt", 1.0), V("throughput", 5000.0)], history({"throughput": 10.0}))
    info = indicator(outcome, 1)
    assert info == {
        "score": 0.0,
        "value": {
            "metric": "throughput",
            "value": 5000.0,
            "comparedValue": 10.0,
            "success": True,
            "message": "",
        },
        "displayName": "",
        "passTargets": None,
        "warningTargets": None,
        "keySli": False,
        "status": "info",
    }
    assert (outcome.result, outcome.score) == ("pass", 100.0)


def test_info_objective_with_warning_criteria_shows_empty_targets() -> None:
    slo = gate(objective("rt", ["<10"]), objective("tp", warning=[[">100", "<=+10%"]]))
    outcome = judge(slo, [V("rt", 1.0), V("tp", 5000.0)], history({"tp": 40.0}))
    assert indicator(outcome, 1)["status"] == "info"
    assert indicator(outcome, 1)["warningTargets"] == [
        target(">100", 100.0, True),
        target("<=+10%", 40.0, True),  # the raw aggregate, not 44
    ]


def test_only_info_objectives_pass_with_100_even_without_total_score() -> None:
    slo = gate(objective("a"), objective("b"), passing=None, warning=None)
    outcome = judge(slo, [V("a", 1.0)], [])
    assert (outcome.status, outcome.result, outcome.evaluation_result, outcome.score) == (
        "succeeded",
        "pass",
        "pass",
        100.0,
    )
    assert [r["status"] for r in outcome.indicator_results] == ["info", "info"]
    assert indicator(outcome, 1)["value"] == {
        "metric": "b",
        "value": 0.0,
        "comparedValue": 0.0,
        "success": False,
        "message": NO_VALUE,
    }


def test_info_key_sli_without_value_does_not_fail_the_gate() -> None:
    slo = gate(objective("a", ["<10"]), objective("b", key=True))
    assert judge(slo, [V("a", 1.0)], []).result == "pass"


# --- missing and failed values ----------------------------------------------------------


def test_missing_value() -> None:
    slo = gate(objective("rt", ["<600", "<=+10%"], warning=[["<800"]]), objective("b", ["<10"]))
    outcome = judge(slo, [V("b", 1.0)], history({"rt": 500.0}))
    assert indicator(outcome, 0) == {
        "score": 0.0,
        "value": {
            "metric": "rt",
            "value": 0.0,
            "comparedValue": 500.0,
            "success": False,
            "message": NO_VALUE,
        },
        "displayName": "",
        "passTargets": [target("<600", 600.0, True), target("<=+10%", 500.0, True)],
        "warningTargets": [target("<800", 800.0, True)],
        "keySli": False,
        "status": "fail",
    }
    assert (outcome.result, outcome.score) == ("fail", 50.0)


def test_missing_value_without_history_shows_zero_for_relative_targets() -> None:
    outcome = judge(gate(objective("rt", ["<=+10%"])), [], [])
    assert indicator(outcome)["passTargets"] == [target("<=+10%", 0.0, True)]


def test_unsuccessful_value_is_kept_as_is() -> None:
    outcome = judge(gate(objective("rt", [">0"])), [V("rt", 42.0, False, "query timed out")], [])
    assert indicator(outcome)["value"] == {
        "metric": "rt",
        "value": 42.0,
        "comparedValue": 0.0,
        "success": False,
        "message": "query timed out",
    }
    assert indicator(outcome)["status"] == "fail"
    assert indicator(outcome)["passTargets"] == [target(">0", 0.0, True)]


def test_each_value_is_used_once() -> None:
    slo = gate(objective("rt", ["<10"]), objective("rt", ["<100"]), objective("rt", ["<1000"]))
    outcome = judge(slo, [V("rt", 50.0), V("rt", 5.0)], [])
    assert [r["value"]["value"] for r in outcome.indicator_results] == [50.0, 5.0, 0.0]
    assert [r["status"] for r in outcome.indicator_results] == ["fail", "pass", "fail"]
    assert indicator(outcome, 2)["value"]["message"] == NO_VALUE


# --- key SLIs ---------------------------------------------------------------------------


def test_failed_key_sli_fails_the_gate_above_the_pass_target() -> None:
    slo = gate(
        objective("rt", ["<600"], key=True, name="Response time"),
        objective("b", ["<10"]),
        passing="50%",
    )
    outcome = judge(slo, [V("rt", 700.0), V("b", 1.0)], [])
    assert indicator(outcome, 0)["keySli"] is True
    assert (outcome.status, outcome.result, outcome.evaluation_result, outcome.score) == (
        "succeeded",
        "fail",
        "fail",
        50.0,
    )
    assert outcome.message == (
        "Evaluation failed due to key_sli objective 'Response time': failed evaluation with score 0"
    )


def test_failed_key_sli_skips_the_warning_target() -> None:
    slo = gate(
        objective("rt", ["<600"], key=True), *[objective(f"m{i}", ["<10"]) for i in range(3)]
    )
    outcome = judge(slo, [V("rt", 700.0), *[V(f"m{i}", 1.0) for i in range(3)]], [])
    assert outcome.score == 75.0
    assert outcome.result == "fail"
    assert outcome.message == (
        "Evaluation failed due to key_sli objective 'rt': failed evaluation with score 0"
    )


def test_key_sli_without_value_names_the_provider_message() -> None:
    slo = gate(objective("rt", ["<600"], key=True, name="RT"), passing="0%")
    assert judge(slo, [], []).message == (
        "Evaluation failed due to key_sli objective 'RT': no value received from SLI provider"
    )
    failed = judge(slo, [V.failed("rt", "prometheus unreachable")], [])
    assert failed.message == (
        "Evaluation failed due to key_sli objective 'RT': prometheus unreachable"
    )
    assert failed.result == "fail"


def test_key_sli_in_warning_is_no_key_failure() -> None:
    slo = gate(objective("rt", ["<10"], warning=[["<20"]], key=True))
    outcome = judge(slo, [V("rt", 15.0)], [])
    assert (outcome.result, outcome.score) == ("fail", 50.0)
    assert outcome.message == (
        "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    )


def test_first_failed_key_sli_is_named() -> None:
    slo = gate(
        objective("a", ["<1"], key=True, name="First"),
        objective("b", ["<1"], key=True, name="Second"),
    )
    outcome = judge(slo, [V("a", 5.0), V("b", 5.0)], [])
    assert outcome.message.startswith("Evaluation failed due to key_sli objective 'First': ")


# --- criteria errors --------------------------------------------------------------------


def test_unparsable_pass_criterion_fails_the_evaluation() -> None:
    slo = gate(objective("a", ["<10"]), objective("rt", ["<600", "==5"], name="Response time"))
    outcome = judge(slo, [V("a", 1.0), V("rt", 1.0)], [])
    assert outcome == GateOutcome(
        "succeeded",
        "fail",
        "fail",
        0.0,
        "error with Response time: criterion '==5': '=' must be followed by a number, got '=5'"
        " (e.g. '<600', '<=+10%' or '>-5')",
    )


def test_unparsable_pass_criterion_names_the_sli_without_display_name() -> None:
    outcome = judge(gate(objective("rt", ["!=5"])), [V("rt", 1.0)], [])
    assert outcome.message == (
        "error with rt: criterion '!=5': must start with one of <=, <, =, >=, >"
    )


def test_unparsable_pass_criterion_fails_even_without_value() -> None:
    outcome = judge(gate(objective("rt", ["<abc"])), [], [])
    assert outcome.message.startswith("error with rt: criterion '<abc'")
    assert outcome.evaluation_result == "fail"


def test_unparsable_warning_criterion_is_swallowed() -> None:
    slo = gate(objective("rt", ["<10"], warning=[["<20"], ["=>5"]]))
    passed = judge(slo, [V("rt", 5.0)], [])
    assert (indicator(passed)["status"], indicator(passed)["warningTargets"]) == ("pass", None)
    failed = judge(slo, [V("rt", 15.0)], [])  # "<20" would have warned
    assert (indicator(failed)["status"], indicator(failed)["warningTargets"]) == ("fail", None)
    assert failed.result == "fail"
    missing = judge(slo, [], [])
    assert indicator(missing)["warningTargets"] is None


# --- overrides and messages -------------------------------------------------------------


def test_leftover_slis_are_named() -> None:
    outcome = judge(gate(objective("a", ["<10"])), [V("x", 1.0), V("a", 1.0), V("y", 2.0)], [])
    assert outcome.result == "pass"
    assert outcome.message == (
        "Lighthouse received additional SLIs, which are not specified as SLO: x, y ."
        " Please consider using them as an SLO."
    )


def test_leftover_message_follows_the_result_message() -> None:
    slo = gate(objective("a", ["<10"]))
    outcome = judge(slo, [V("a", 11.0), V("a", 12.0)], [])
    assert outcome.message == (
        "Evaluation failed since the calculated score of 0 is below the warning value of 75"
        " Lighthouse received additional SLIs, which are not specified as SLO: a ."
        " Please consider using them as an SLO."
    )


def test_sli_failure_fails_the_event_but_keeps_the_evaluation() -> None:
    outcome = judge(gate(objective("a", ["<10"])), [V("a", 1.0)], [], sli_failure="boom")
    assert (outcome.status, outcome.result, outcome.evaluation_result, outcome.score) == (
        "succeeded",
        "fail",
        "pass",
        100.0,
    )
    assert outcome.message == "lighthouse failed because SLI failed with message boom"
    assert indicator(outcome)["status"] == "pass"


def test_sli_failure_with_a_criteria_error() -> None:
    outcome = judge(gate(objective("a", ["==1"])), [V("a", 1.0)], [], sli_failure="boom")
    assert (outcome.result, outcome.evaluation_result, outcome.score) == ("fail", "fail", 0.0)
    assert outcome.message == "lighthouse failed because SLI failed with message boom"


def test_no_objectives() -> None:
    outcome = judge(parse_slo({"total_score": {"pass": "90%"}}), [V("a", 1.0)], [])
    assert outcome == GateOutcome(
        "succeeded",
        "fail",
        "pass",
        100.0,
        "lighthouse failed because no SLO objective was provided",
    )
    with_failure = judge(parse_slo(None), [], [], sli_failure="boom")
    assert with_failure.message == "lighthouse failed because no SLO objective was provided"


# --- properties -------------------------------------------------------------------------

CRITERIA = ["<10", "<=50", ">5", ">=0", "=7", "<=+10%", "<-5%", ">+2", ">=-3", "<=+0%"]
criteria_groups = st.lists(st.lists(st.sampled_from(CRITERIA), max_size=3), max_size=3)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SLO, list[IndicatorValue], list[list[dict[str, Any]]]]:
    names = draw(st.lists(st.sampled_from("abcde"), min_size=1, max_size=5))
    items = [
        {
            "sli": name,
            "pass": [{"criteria": group} for group in draw(criteria_groups)],
            "warning": [{"criteria": group} for group in draw(criteria_groups)],
            "weight": draw(st.integers(0, 5)),
            "key_sli": draw(st.booleans()),
        }
        for name in names
    ]
    slo = parse_slo(
        {
            "objectives": items,
            "total_score": {
                "pass": f"{draw(st.integers(0, 100))}%",
                "warning": draw(st.sampled_from([None, "50%", "75"])),
            },
            "comparison": {"aggregate_function": draw(st.sampled_from(["avg", "p50", "p95"]))},
        }
    )
    number = st.integers(-100, 100).map(float)
    values = [
        V(name, draw(number), draw(st.booleans()))
        for name in draw(st.lists(st.sampled_from("abcdef"), max_size=6))
    ]
    previous = [
        [
            {"value": {"metric": name, "value": draw(number), "success": draw(st.booleans())}}
            for name in draw(st.lists(st.sampled_from("abc"), max_size=3))
        ]
        for _ in range(draw(st.integers(0, 3)))
    ]
    return slo, values, previous


@settings(max_examples=300)
@given(scenarios())
def test_score_stays_within_0_and_100(
    scenario: tuple[SLO, list[IndicatorValue], list[list[dict[str, Any]]]],
) -> None:
    outcome = judge(*scenario)
    assert 0.0 <= outcome.score <= 100.0
    assert outcome.status == "succeeded"
    assert outcome.result in ("pass", "warning", "fail")
    for result in outcome.indicator_results:
        assert result["status"] in ("pass", "warning", "fail", "info")


@settings(max_examples=300)
@given(scenarios())
def test_a_key_sli_that_does_not_fail_changes_nothing(
    scenario: tuple[SLO, list[IndicatorValue], list[list[dict[str, Any]]]],
) -> None:
    slo, values, previous = scenario
    before = judge(slo, values, previous)
    statuses = [result["status"] for result in before.indicator_results]
    keyed = tuple(
        replace(item, key_sli=True) if status != "fail" else item
        for item, status in zip(slo.objectives, statuses, strict=True)
    )
    after = judge(replace(slo, objectives=keyed), values, previous)
    assert (after.result, after.evaluation_result, after.score, after.message) == (
        before.result,
        before.evaluation_result,
        before.score,
        before.message,
    )
