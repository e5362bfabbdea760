from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.domain.errors import Problem
from controlplane.domain.slo import (
    SLO,
    Comparison,
    Criterion,
    InvalidCriterion,
    InvalidSLO,
    Objective,
    TotalScore,
    aggregate,
    criteria_problems,
    parse_criterion,
    parse_score_target,
    parse_slo,
    percentile,
)


def problems(document: Any, lines: dict[str, int] | None = None) -> list[Problem]:
    with pytest.raises(InvalidSLO) as caught:
        parse_slo(document, source="slo.yaml", lines=lines)
    return list(caught.value.problems)


def one_problem(document: Any) -> Problem:
    found = problems(document)
    assert len(found) == 1, found
    return found[0]


def objectives(*items: Any) -> dict[str, Any]:
    return {"objectives": list(items)}


# --- criteria ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "operator", "amount", "relative", "percent"),
    [
        ("<=5", "<=", 5.0, False, False),
        ("<5", "<", 5.0, False, False),
        ("=5", "=", 5.0, False, False),
        (">=5", ">=", 5.0, False, False),
        (">5", ">", 5.0, False, False),
        ("<600", "<", 600.0, False, False),
        ("<=800.5", "<=", 800.5, False, False),
        ("<.5", "<", 0.5, False, False),
        ("<5.", "<", 5.0, False, False),
        ("=0", "=", 0.0, False, False),
        ("<=+10%", "<=", 10.0, True, True),
        ("<+10%", "<", 10.0, True, True),
        ("<10%", "<", 10.0, True, True),  # a bare percentage is an increase
        (">-8%", ">", -8.0, True, True),
        ("<=-10%", "<=", -10.0, True, True),
        ("<0%", "<", 0.0, True, True),
        ("<=+5", "<=", 5.0, True, False),  # a signed number is a relative delta
        (">-5", ">", -5.0, True, False),
        ("<-5", "<", -5.0, True, False),
        (">=+2.5", ">=", 2.5, True, False),
    ],
)
def test_parse_criterion(
    text: str, operator: str, amount: float, relative: bool, percent: bool
) -> None:
    assert parse_criterion(text) == Criterion(text, operator, amount, relative, percent)


def test_bare_percentage_equals_explicit_increase() -> None:
    bare, explicit = parse_criterion("<10%"), parse_criterion("<+10%")
    assert (bare.operator, bare.amount, bare.relative, bare.percent) == (
        explicit.operator,
        explicit.amount,
        explicit.relative,
        explicit.percent,
    )


@pytest.mark.parametrize(
    ("text", "operator", "amount", "relative"),
    [
        (" < = 600 ", "<=", 600.0, False),
        ("<= +10 %", "<=", 10.0, True),
        ("\t>\n-5", ">", -5.0, True),
    ],
)
def test_spaces_are_removed_and_the_text_kept(
    text: str, operator: str, amount: float, relative: bool
) -> None:
    criterion = parse_criterion(text)
    assert (criterion.operator, criterion.amount, criterion.relative) == (
        operator,
        amount,
        relative,
    )
    assert criterion.text == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("==5", "'=' must be followed by a number, got '=5'"),
        ("!=5", "must start with one of <=, <, =, >=, >"),
        ("=>5", "'=' must be followed by a number, got '>5'"),
        ("<abc", "'<' must be followed by a number, got 'abc'"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("<", "'<' must be followed by a number, got nothing"),
        ("<%", "'<' must be followed by a number, got '%'"),
        ("<+%", "'<' must be followed by a number, got '+%'"),
        ("5", "must start with one of"),
        ("<+-5", "got '+-5'"),
        ("<5%%", "got '5%%'"),
        ("<1e3", "got '1e3'"),
        ("<5,5", "got '5,5'"),
        ("< 5 ms", "got '5ms'"),
    ],
)
def test_invalid_criteria(text: str, reason: str) -> None:
    with pytest.raises(InvalidCriterion) as caught:
        parse_criterion(text)
    assert caught.value.text == text
    assert str(caught.value).startswith(f"criterion {text!r}: ")
    assert reason in str(caught.value)


def test_invalid_criterion_message_in_full() -> None:
    with pytest.raises(InvalidCriterion) as caught:
        parse_criterion("==5")
    assert str(caught.value) == (
        "criterion '==5': '=' must be followed by a number, got '=5'"
        " (e.g. '<600', '<=+10%' or '>-5')"
    )


@pytest.mark.parametrize(
    ("text", "aggregate_value", "target"),
    [
        ("<=+10%", 500.0, 550.0),  # 500 * 110 / 100
        ("<=10%", 500.0, 550.0),
        ("<=-10%", 500.0, 450.0),  # 500 * 90 / 100
        (">=+50%", 3.0, 4.5),
        ("<=+5", 500.0, 505.0),
        ("<=-5", 500.0, 495.0),
        ("<600", 500.0, 600.0),  # absolute: the aggregate does not matter
        ("<600", 0.0, 600.0),
        ("<=+10%", 0.0, 0.0),
    ],
)
def test_targets(text: str, aggregate_value: float, target: float) -> None:
    assert parse_criterion(text).target(aggregate_value) == target


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("<5", 4.0, True),
        ("<5", 5.0, False),
        ("<=5", 5.0, True),
        ("<=5", 5.5, False),
        ("=5", 5.0, True),
        ("=5", 5.000001, False),
        (">=5", 5.0, True),
        (">=5", 4.9, False),
        (">5", 5.0, False),
        (">5", 6.0, True),
    ],
)
def test_operators(text: str, value: float, expected: bool) -> None:
    assert parse_criterion(text).satisfied(value, 100.0) is expected
    assert parse_criterion(text).satisfied(value, None) is expected


def test_relative_criteria_compare_with_the_aggregate() -> None:
    assert parse_criterion("<=+10%").satisfied(550.0, 500.0)
    assert not parse_criterion("<=+10%").satisfied(550.1, 500.0)
    assert parse_criterion(">-5").satisfied(495.5, 500.0)
    assert not parse_criterion(">-5").satisfied(495.0, 500.0)


@pytest.mark.parametrize("text", ["<=+10%", "<-1000%", ">+5", "=-3", ">=+100000"])
def test_relative_criteria_pass_without_history(text: str) -> None:
    assert parse_criterion(text).satisfied(123456.0, None)


def test_absolute_criteria_do_not_need_history() -> None:
    assert not parse_criterion("<600").satisfied(700.0, None)


@given(
    operator=st.sampled_from(["<=", "<", "=", ">=", ">"]),
    sign=st.sampled_from(["", "+", "-"]),
    number=st.integers(min_value=0, max_value=10**6),
    decimals=st.integers(min_value=0, max_value=999),
    percent=st.booleans(),
)
def test_criteria_grammar(
    operator: str, sign: str, number: int, decimals: int, percent: bool
) -> None:
    text = f"{operator}{sign}{number}.{decimals}{'%' if percent else ''}"
    criterion = parse_criterion(text)
    magnitude = float(f"{number}.{decimals}")
    assert criterion.operator == operator
    assert criterion.amount == (-magnitude if sign == "-" else magnitude)
    assert criterion.relative == (percent or bool(sign))
    assert criterion.percent == percent


# --- aggregation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "function", "expected"),
    [
        ([], "avg", 0.0),
        ([], "p50", 0.0),
        ([], "p95", 0.0),
        ([4.0], "avg", 4.0),
        ([1.0, 2.0, 3.0, 4.0], "avg", 2.5),
        ([300.0, 500.0], "avg", 400.0),
        # n=1: pos = p * 2 >= 1 = n, so the only value
        ([10.0], "p50", 10.0),
        ([10.0], "p90", 10.0),
        ([10.0], "p95", 10.0),
        # n=2: p50 pos 1.5 -> 10 + 0.5 * (20 - 10); p90 pos 2.7 >= 2 -> max
        ([20.0, 10.0], "p50", 15.0),
        ([20.0, 10.0], "p90", 20.0),
        ([20.0, 10.0], "p95", 20.0),
        # n=3: p50 pos 2.0 -> second value exactly; p90 pos 3.6 -> max
        ([30.0, 10.0, 20.0], "p50", 20.0),
        ([30.0, 10.0, 20.0], "p90", 30.0),
        ([30.0, 10.0, 20.0], "p95", 30.0),
        # n=4: p50 pos 2.5 -> 20 + 0.5 * 10; p90 pos 4.5 -> max
        ([40.0, 30.0, 20.0, 10.0], "p50", 25.0),
        ([40.0, 30.0, 20.0, 10.0], "p90", 40.0),
        ([40.0, 30.0, 20.0, 10.0], "p95", 40.0),
        # n=5: p50 pos 3.0 -> third value; p90 pos 5.4 -> max; p95 pos 5.7 -> max
        ([50.0, 10.0, 40.0, 20.0, 30.0], "p50", 30.0),
        ([50.0, 10.0, 40.0, 20.0, 30.0], "p90", 50.0),
        ([50.0, 10.0, 40.0, 20.0, 30.0], "p95", 50.0),
    ],
)
def test_aggregate(values: list[float], function: str, expected: float) -> None:
    assert aggregate(values, function) == expected


def test_p90_interpolates_with_ten_values() -> None:
    # pos = 0.9 * 11 = 9.9 -> 9 + 0.9 * (10 - 9)
    assert aggregate([float(v) for v in range(1, 11)], "p90") == pytest.approx(9.9)


def test_p95_interpolates_with_twenty_values() -> None:
    # pos = 0.95 * 21 = 19.95 -> 19 + 0.95 * (20 - 19)
    assert aggregate([float(v) for v in range(20, 0, -1)], "p95") == pytest.approx(19.95)


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([10.0, 20.0, 30.0, 40.0, 50.0], 0.1, 10.0),  # pos 0.6 < 1 -> min
        ([10.0, 20.0, 30.0, 40.0, 50.0], 0.25, 15.0),  # pos 1.5
        ([10.0, 20.0, 30.0, 40.0, 50.0], 0.0, 10.0),
        ([10.0, 20.0, 30.0, 40.0, 50.0], 1.0, 50.0),
        ([7.0], 0.1, 7.0),
    ],
)
def test_percentile_edges(values: list[float], fraction: float, expected: float) -> None:
    assert percentile(values, fraction) == pytest.approx(expected)


def test_unknown_aggregate_function() -> None:
    with pytest.raises(ValueError, match="p99"):
        aggregate([1.0], "p99")


moderate = st.lists(st.integers(-(10**6), 10**6).map(float), min_size=1, max_size=30)


@given(values=moderate, first=st.floats(0, 1), second=st.floats(0, 1))
def test_percentile_is_within_range_and_monotone(
    values: list[float], first: float, second: float
) -> None:
    low, high = sorted((first, second))
    at_low, at_high = percentile(values, low), percentile(values, high)
    assert min(values) <= at_low <= at_high <= max(values)


@given(values=moderate, function=st.sampled_from(["avg", "p50", "p90", "p95"]))
def test_aggregate_is_within_range(values: list[float], function: str) -> None:
    assert min(values) <= aggregate(values, function) <= max(values)


# --- total score targets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90%", 90.0),
        ("90", 90.0),
        (" 90 % ", 90.0),
        ("75.5%", 75.5),
        ("0", 0.0),
        ("100%", 100.0),
        ("+80", 80.0),
        (".5%", 0.5),
    ],
)
def test_score_targets(text: str, expected: float) -> None:
    assert parse_score_target(text) == expected


@pytest.mark.parametrize("text", ["", "%", "abc", "90%%", "nan", "inf", "ninety%", "9 0"])
def test_invalid_score_targets(text: str) -> None:
    with pytest.raises(InvalidSLO) as caught:
        parse_score_target(text, path="total_score.pass")
    assert str(caught.value) == (
        f"total_score.pass: must be a percentage such as '90%', got {text!r}"
    )


# --- parse_slo: defaults ----------------------------------------------------------------

FULL: dict[str, Any] = {
    "spec_version": "1.0",
    "filter": {"mz_id": "4711", "handler": "carts"},
    "comparison": {
        "compare_with": "several_results",
        "include_result_with_score": "pass",
        "number_of_comparison_results": 3,
        "aggregate_function": "p90",
    },
    "objectives": [
        {
            "sli": "response_time_p95",
            "displayName": "Response Time P95",
            "key_sli": False,
            "weight": 2,
            "pass": [{"criteria": ["<=+10%", "<600"]}],
            "warning": [{"criteria": ["<=800"]}],
        },
        {"sli": "throughput"},
    ],
    "total_score": {"pass": "90%", "warning": "75%"},
}


def test_parses_the_reference_file() -> None:
    assert parse_slo(FULL) == SLO(
        objectives=(
            Objective(
                sli="response_time_p95",
                display_name="Response Time P95",
                key_sli=False,
                weight=2,
                pass_groups=(("<=+10%", "<600"),),
                warning_groups=(("<=800",),),
            ),
            Objective(sli="throughput"),
        ),
        total_score=TotalScore("90%", "75%"),
        comparison=Comparison("several_results", "pass", 3, "p90"),
        filter={"mz_id": "4711", "handler": "carts"},
        spec_version="1.0",
    )


def test_objective_names_and_information() -> None:
    slo = parse_slo(FULL)
    assert slo.objectives[0].name == "Response Time P95"
    assert slo.objectives[1].name == "throughput"
    assert not slo.objectives[0].informational
    assert slo.objectives[1].informational
    assert slo.indicators == ("response_time_p95", "throughput")


def test_absent_comparison_defaults() -> None:
    comparison = parse_slo(objectives({"sli": "a"})).comparison
    assert comparison == Comparison("single_result", "all", 1, "avg")
    assert comparison.results_to_fetch == 1
    assert comparison.result_filter == ()


def test_present_but_empty_comparison_defaults() -> None:
    # include -> all, number 0 -> 3 (!), aggregate -> avg, compare_with not defaulted
    comparison = parse_slo({"comparison": {}}).comparison
    assert comparison == Comparison("", "all", 3, "avg")
    assert comparison.results_to_fetch == 3


@pytest.mark.parametrize(
    ("block", "fetched"),
    [
        ({"compare_with": "single_result"}, 1),
        ({"compare_with": "single_result", "number_of_comparison_results": 5}, 1),
        ({"compare_with": "several_results"}, 3),
        ({"compare_with": "several_results", "number_of_comparison_results": 0}, 3),
        ({"compare_with": "several_results", "number_of_comparison_results": 5}, 5),
        ({"compare_with": "several_results", "number_of_comparison_results": 1}, 1),
        ({"number_of_comparison_results": 5}, 3),
        ({"compare_with": ""}, 3),
    ],
)
def test_results_to_fetch(block: dict[str, Any], fetched: int) -> None:
    assert parse_slo({"comparison": block}).comparison.results_to_fetch == fetched


def test_number_of_comparison_results_defaults_to_three_in_a_block() -> None:
    slo = parse_slo({"comparison": {"compare_with": "several_results"}})
    assert slo.comparison.number_of_comparison_results == 3


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        ("pass", ("pass",)),
        ("pass_or_warn", ("pass", "warning")),
        ("all", ()),
        ("", ()),
        (None, ()),
    ],
)
def test_result_filter(include: str | None, expected: tuple[str, ...]) -> None:
    slo = parse_slo({"comparison": {"include_result_with_score": include}})
    assert slo.comparison.result_filter == expected


def test_null_comparison_is_absent() -> None:
    assert parse_slo({"comparison": None}).comparison == Comparison()


@pytest.mark.parametrize(("raw", "weight"), [(None, 1), (0, 1), (1, 1), (3, 3)])
def test_weights(raw: int | None, weight: int) -> None:
    item: dict[str, Any] = {"sli": "a"}
    if raw is not None:
        item["weight"] = raw
    assert parse_slo(objectives(item)).objectives[0].weight == weight


def test_null_objectives_are_dropped() -> None:
    slo = parse_slo(objectives(None, {"sli": "a"}, None, {"sli": "b"}))
    assert [o.sli for o in slo.objectives] == ["a", "b"]


@pytest.mark.parametrize("document", [None, {}, {"objectives": None}, {"objectives": []}])
def test_empty_documents(document: Any) -> None:
    assert parse_slo(document) == SLO()


def test_empty_document_has_absent_defaults() -> None:
    assert parse_slo(None).comparison.results_to_fetch == 1
    assert parse_slo(None).total_score == TotalScore(None, None)


def test_total_score_normalisation() -> None:
    assert parse_slo({"total_score": {"pass": "", "warning": ""}}).total_score == TotalScore()
    assert parse_slo({"total_score": {"pass": 90, "warning": 75.5}}).total_score == TotalScore(
        "90", "75.5"
    )
    assert parse_slo({"total_score": {"pass": "90%"}}).total_score == TotalScore("90%", None)
    assert parse_slo({"total_score": None}).total_score == TotalScore()


def test_unparsable_targets_and_criteria_wait_for_the_evaluation() -> None:
    slo = parse_slo(
        {
            "objectives": [{"sli": "a", "pass": [{"criteria": ["==5"]}]}],
            "total_score": {"pass": "ninety"},
        }
    )
    assert slo.objectives[0].pass_groups == (("==5",),)
    assert slo.total_score.pass_target == "ninety"


def test_scalar_text_fields() -> None:
    slo = parse_slo({"spec_version": 1.0, "filter": {"mz_id": 4711, "on": True, "empty": ""}})
    assert slo.spec_version == "1.0"
    assert slo.filter == {"mz_id": "4711", "on": "true", "empty": ""}


def test_groups() -> None:
    slo = parse_slo(
        objectives(
            {
                "sli": "a",
                "pass": [{"criteria": ["<1", ">0"]}, {"criteria": ["=5"]}, {"criteria": []}],
                "warning": None,
                "key_sli": True,
                "displayName": None,
            },
            {"sli": "b", "pass": [], "warning": [{"criteria": None}]},
        )
    )
    first, second = slo.objectives
    assert first.pass_groups == (("<1", ">0"), ("=5",), ())
    assert first.warning_groups == ()
    assert first.key_sli
    assert first.display_name == ""
    assert second.pass_groups == ()
    assert second.informational
    assert second.warning_groups == ((),)


def test_unknown_keys_are_ignored() -> None:
    assert parse_slo({"objectives": [{"sli": "a", "extra": 1}], "other": []}).objectives == (
        Objective("a"),
    )


# --- parse_slo: errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ("text", "", "an SLO file is a mapping with 'objectives', got a string"),
        ({"objectives": {"sli": "a"}}, "objectives", "must be a list of objectives, got a mapping"),
        (
            objectives({"sli": "a"}, "b"),
            "objectives[1]",
            "an objective is a mapping with 'sli', got a string",
        ),
        (
            objectives({"pass": []}),
            "objectives[0].sli",
            "every objective needs the name of its SLI, got None",
        ),
        (
            objectives({"sli": " "}),
            "objectives[0].sli",
            "every objective needs the name of its SLI, got ' '",
        ),
        (
            objectives({"sli": 5}),
            "objectives[0].sli",
            "every objective needs the name of its SLI, got 5",
        ),
        (
            objectives({"sli": "a"}, {"sli": "b"}, {"sli": "c", "weight": "x"}),
            "objectives[2].weight",
            "must be a whole number, got 'x'",
        ),
        (
            objectives({"sli": "a", "weight": 1.5}),
            "objectives[0].weight",
            "must be a whole number, got 1.5",
        ),
        (
            objectives({"sli": "a", "weight": True}),
            "objectives[0].weight",
            "must be a whole number, got True",
        ),
        (
            objectives({"sli": "a", "weight": -1}),
            "objectives[0].weight",
            "must not be negative, got -1",
        ),
        (
            objectives({"sli": "a", "key_sli": "yes"}),
            "objectives[0].key_sli",
            "must be true or false, got 'yes'",
        ),
        (
            objectives({"sli": "a", "displayName": 3}),
            "objectives[0].displayName",
            "must be a string, got int",
        ),
        (
            objectives({"sli": "a", "pass": "<600"}),
            "objectives[0].pass",
            "must be a list of {criteria: [...]} groups, got a string",
        ),
        (
            objectives({"sli": "a", "pass": ["<600"]}),
            "objectives[0].pass[0]",
            "must be a mapping with a 'criteria' list, got a string",
        ),
        (
            objectives({"sli": "a", "warning": [{"criterias": ["<600"]}]}),
            "objectives[0].warning[0]",
            "must be a mapping with a 'criteria' list, got a mapping",
        ),
        (
            objectives({"sli": "a", "pass": [None]}),
            "objectives[0].pass[0]",
            "must be a mapping with a 'criteria' list, got nothing",
        ),
        (
            objectives({"sli": "a", "pass": [{"criteria": "<600"}]}),
            "objectives[0].pass[0].criteria",
            "must be a list of strings, got a string",
        ),
        (
            objectives({"sli": "a", "pass": [{"criteria": ["<600", 5]}]}),
            "objectives[0].pass[0].criteria[1]",
            "must be a string such as '<600', '<=+10%' or '>-5', got 5",
        ),
        (
            {"comparison": {"aggregate_function": "p99"}},
            "comparison.aggregate_function",
            "must be one of avg, p50, p90, p95, got 'p99'",
        ),
        (
            {"comparison": {"compare_with": "all_results"}},
            "comparison.compare_with",
            "must be one of single_result, several_results, got 'all_results'",
        ),
        (
            {"comparison": {"include_result_with_score": "warning"}},
            "comparison.include_result_with_score",
            "must be one of pass, pass_or_warn, all, got 'warning'",
        ),
        (
            {"comparison": {"number_of_comparison_results": -1}},
            "comparison.number_of_comparison_results",
            "must not be negative, got -1",
        ),
        (
            {"comparison": {"number_of_comparison_results": "3"}},
            "comparison.number_of_comparison_results",
            "must be a whole number, got '3'",
        ),
        ({"comparison": "single_result"}, "comparison", "must be a mapping, got a string"),
        ({"filter": ["mz_id"]}, "filter", "must be a mapping of names to strings, got a list"),
        ({"filter": {"mz_id": ["1"]}}, "filter.mz_id", "must be a string, got a list"),
        ({"filter": {"mz_id": None}}, "filter.mz_id", "must be a string, got nothing"),
        (
            {"total_score": "90%"},
            "total_score",
            "must be a mapping with 'pass' and 'warning', got a string",
        ),
        ({"total_score": {"pass": ["90"]}}, "total_score.pass", "must be a string, got a list"),
        ({"spec_version": {}}, "spec_version", "must be a string, got a mapping"),
    ],
)
def test_structural_problems(document: Any, path: str, message: str) -> None:
    assert one_problem(document) == Problem(path, message)


def test_weight_message_names_the_path() -> None:
    with pytest.raises(InvalidSLO) as caught:
        parse_slo(objectives({"sli": "a"}, {"sli": "b"}, {"sli": "c", "weight": "x"}))
    assert str(caught.value) == "objectives[2].weight: must be a whole number, got 'x'"


def test_all_problems_are_collected_with_source_and_lines() -> None:
    document = {
        "objectives": [{"sli": "a", "weight": "x"}, {"key_sli": 1}],
        "comparison": {"aggregate_function": "max"},
    }
    found = problems(document, lines={"objectives[0]": 4, "comparison": 10})
    assert [(p.path, p.line) for p in found] == [
        ("objectives[0].weight", 4),
        ("objectives[1].sli", None),
        ("objectives[1].key_sli", None),
        ("comparison.aggregate_function", 10),
    ]
    with pytest.raises(InvalidSLO) as caught:
        parse_slo(document, source="slo.yaml", lines={"objectives[0]": 4})
    assert str(caught.value).startswith("slo.yaml:4: objectives[0].weight: must be a whole number")
    assert caught.value.source == "slo.yaml"


def test_null_objective_keeps_the_indices_of_the_others() -> None:
    assert one_problem(objectives(None, {"sli": "a", "weight": "x"})).path == "objectives[1].weight"


# --- criteria_problems ------------------------------------------------------------------


def test_criteria_problems_lists_every_unparsable_criterion() -> None:
    slo = parse_slo(
        {
            "objectives": [
                {"sli": "a", "pass": [{"criteria": ["<600"]}]},
                {
                    "sli": "b",
                    "pass": [{"criteria": ["<1"]}, {"criteria": ["<2", "==5"]}],
                    "warning": [{"criteria": ["=>5"]}],
                },
            ],
            "total_score": {"pass": "90%", "warning": "high"},
        }
    )
    assert criteria_problems(slo) == [
        "objectives[1].pass[1].criteria[1]: criterion '==5': '=' must be followed by a number,"
        " got '=5' (e.g. '<600', '<=+10%' or '>-5')",
        "objectives[1].warning[0].criteria[0]: criterion '=>5': '=' must be followed by a number,"
        " got '>5' (e.g. '<600', '<=+10%' or '>-5')",
        "total_score.warning: must be a percentage such as '90%', got 'high'",
    ]


def test_criteria_problems_of_a_good_slo() -> None:
    assert criteria_problems(parse_slo(FULL)) == []
