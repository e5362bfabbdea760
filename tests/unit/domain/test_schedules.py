"""Schedules: parsing with field paths, and the pure firing rule with its missed policies."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import schedules, shipyard
from controlplane.domain.errors import Problem
from controlplane.domain.schedules import Schedule, due, parse_schedule, parse_schedules

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "nightly",
        "cron": "0 2 * * *",
        "stage": "dev",
        "sequence": "delivery",
        "service": "carts",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def one(**changes: Any) -> Schedule:
    parsed, problems = parse_schedule(entry(**changes), "spec.schedules[0]")
    assert problems == []
    assert parsed is not None
    return parsed


def problems_of(raw: object) -> list[tuple[str, str]]:
    _, found = parse_schedules(raw, "spec.schedules")
    return [(problem.path, problem.message) for problem in found]


def at(*fields: int, zone: ZoneInfo = UTC) -> float:
    return dt.datetime(*fields, tzinfo=zone).timestamp()  # type: ignore[misc]


# --------------------------------------------------------------------------- parsing


def test_a_full_entry() -> None:
    parsed = one(
        cron="*/2 * * * * *",
        timezone="Europe/Berlin",
        data={"configurationChange": {"values": {"image": "a:1"}}, "labels": {"team": "x"}},
        missed="runOnce",
    )
    assert parsed.name == "nightly"
    assert parsed.cron_text == "*/2 * * * * *"
    assert parsed.cron.seconds == tuple(range(0, 60, 2))
    assert (parsed.timezone, parsed.zone) == ("Europe/Berlin", BERLIN)
    assert (parsed.stage, parsed.sequence, parsed.service) == ("dev", "delivery", "carts")
    assert parsed.data["labels"] == {"team": "x"}
    assert parsed.missed == "runOnce"
    assert parsed.fingerprint == "*/2 * * * * *|Europe/Berlin"
    assert parsed.document()["timezone"] == "Europe/Berlin"


def test_defaults() -> None:
    parsed = one()
    assert parsed.timezone == "UTC"
    assert parsed.missed == "skip"
    assert parsed.data == {}


def test_no_schedules_is_fine() -> None:
    assert parse_schedules(None, "spec.schedules") == ((), [])
    assert parse_schedules([], "spec.schedules") == ((), [])


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"name": "x"}, "spec.schedules", "must be a list of schedules, got a mapping"),
        (["0 2 * * *"], "spec.schedules[0]", "a schedule is a mapping with 'name' and 'cron'"),
        ([entry(name=None)], "spec.schedules[0].name", "every schedule needs a non-empty name"),
        ([entry(name="Nightly")], "spec.schedules[0].name", "must be lowercase letters"),
        ([entry(name="a.b")], "spec.schedules[0].name", "must be lowercase letters"),
        ([entry(cron=None)], "spec.schedules[0].cron", "must be a cron expression such as"),
        ([entry(cron=5)], "spec.schedules[0].cron", "got int"),
        ([entry(cron="  ")], "spec.schedules[0].cron", "got a string"),
        (
            [entry(cron="61 * * * *")],
            "spec.schedules[0].cron",
            "minute field '61': 61 is out of range 0-59",
        ),
        ([entry(cron="0 0 30 2 *")], "spec.schedules[0].cron", "never matches"),
        ([entry(cron="@often")], "spec.schedules[0].cron", "unknown macro '@often'"),
        (
            [entry(timezone="Mars/Olympus")],
            "spec.schedules[0].timezone",
            "'Mars/Olympus' is not a known IANA time zone",
        ),
        ([entry(timezone="../etc/passwd")], "spec.schedules[0].timezone", "not a known IANA"),
        ([entry(timezone=2)], "spec.schedules[0].timezone", "must be an IANA time zone"),
        ([entry(timezone="Europe")], "spec.schedules[0].timezone", "not a known IANA"),
        ([entry(timezone="localtime")], "spec.schedules[0].timezone", "depends on the machine"),
        ([entry(stage=None)], "spec.schedules[0].stage", "is required: the stage"),
        ([entry(sequence="")], "spec.schedules[0].sequence", "is required: the sequence"),
        ([entry(service=None)], "spec.schedules[0].service", "is required: the service"),
        ([entry(service="a b")], "spec.schedules[0].service", "must not contain dots"),
        ([entry(sequence="a.b")], "spec.schedules[0].sequence", "must not contain dots"),
        ([entry(data=[1])], "spec.schedules[0].data", "must be a mapping, got a list"),
        (
            [entry(data={"project": "other"})],
            "spec.schedules[0].data.project",
            "is set by the schedule",
        ),
        ([entry(data={"labels": "x"})], "spec.schedules[0].data.labels", "must be a mapping"),
        (
            [entry(data={"when": dt.date(2024, 1, 1)})],
            "spec.schedules[0].data.when",
            "must be JSON (strings, numbers, lists, mappings), got date",
        ),
        (
            [entry(data={"a": [{"b": float("nan")}]})],
            "spec.schedules[0].data.a[0].b",
            "must be a finite number",
        ),
        ([entry(data={"a": {1: "b"}})], "spec.schedules[0].data.a", "keys must be strings"),
        ([entry(missed="catchUp")], "spec.schedules[0].missed", "must be 'skip' or 'runOnce'"),
        ([entry(timeZone="UTC")], "spec.schedules[0].timeZone", "unknown key; a schedule has"),
        (
            [entry(), entry()],
            "spec.schedules[1].name",
            "schedule 'nightly' is defined twice",
        ),
    ],
)
def test_every_problem_names_its_field(raw: object, path: str, message: str) -> None:
    found = problems_of(raw)
    assert any(where == path and message in text for where, text in found), found


def test_all_problems_of_an_entry_are_reported_and_it_is_left_out() -> None:
    parsed, found = parse_schedules(
        [entry(cron="bad", timezone="Nowhere/Land", missed="always"), entry(name="ok")],
        "spec.schedules",
    )
    assert [schedule.name for schedule in parsed] == ["ok"]
    assert {problem.path for problem in found} == {
        "spec.schedules[0].cron",
        "spec.schedules[0].timezone",
        "spec.schedules[0].missed",
    }


def test_a_single_entry_without_a_path_has_bare_field_names() -> None:
    parsed, found = parse_schedule({"name": "x", "cron": "* * *"})
    assert parsed is None
    assert Problem("cron", found[0].message) in found
    assert {problem.path for problem in found} == {"cron", "stage", "sequence", "service"}


def test_the_name_rule_is_the_shipyards() -> None:
    assert schedules.NAME_RULE.pattern == shipyard.NAME_RULE.pattern


def test_slot_text_is_rfc3339_utc() -> None:
    assert schedules.slot_text(at(2024, 3, 31, 1, 30)) == "2024-03-31T01:30:00Z"


# --------------------------------------------------------------------------- firing

HOURLY = one(cron="0 * * * *")
HOURLY_ONCE = one(cron="0 * * * *", missed="runOnce")
GRACE = 60.0


def test_a_new_schedule_does_not_back_fill() -> None:
    first_seen = at(2024, 1, 1, 10, 5)
    firing = due(HOURLY_ONCE, None, first_seen, at(2024, 1, 1, 10, 30), GRACE)
    assert firing.slot is None
    assert firing.next_slot == at(2024, 1, 1, 11)
    assert firing.missed_through is None


def test_a_slot_fires_on_time_within_the_grace() -> None:
    firing = due(HOURLY, at(2024, 1, 1, 10), 0.0, at(2024, 1, 1, 11, 0, 2), GRACE)
    assert (firing.slot, firing.late) == (at(2024, 1, 1, 11), False)
    assert firing.next_slot == at(2024, 1, 1, 12)
    assert due(HOURLY, firing.slot, 0.0, at(2024, 1, 1, 11, 0, 3), GRACE).slot is None


def test_a_slot_due_exactly_now_is_on_time() -> None:
    assert due(HOURLY, at(2024, 1, 1, 10), 0.0, at(2024, 1, 1, 11), GRACE).slot == at(
        2024, 1, 1, 11
    )


def test_on_time_slots_fire_one_by_one_oldest_first() -> None:
    every_ten = one(cron="*/10 * * * * *")
    start = at(2024, 1, 1)
    now = start + 35
    fired = []
    last: float | None = start
    while (firing := due(every_ten, last, start, now, GRACE)).slot is not None:
        fired.append(firing.slot - start)
        last = firing.slot
    assert fired == [10, 20, 30]


def test_skip_fires_no_missed_slot() -> None:
    firing = due(HOURLY, at(2024, 1, 1, 8), 0.0, at(2024, 1, 1, 11, 30), GRACE)
    assert firing.slot is None
    assert firing.missed_through == at(2024, 1, 1, 11)
    assert firing.next_slot == at(2024, 1, 1, 12)


def test_skip_still_fires_the_slot_that_is_on_time() -> None:
    firing = due(HOURLY, at(2024, 1, 1, 8), 0.0, at(2024, 1, 1, 11, 0, 30), GRACE)
    assert (firing.slot, firing.late) == (at(2024, 1, 1, 11), False)
    assert firing.missed_through == at(2024, 1, 1, 10)


def test_run_once_fires_the_latest_missed_slot_once() -> None:
    now = at(2024, 1, 1, 11, 30)
    firing = due(HOURLY_ONCE, at(2024, 1, 1, 8), 0.0, now, GRACE)
    assert (firing.slot, firing.late) == (at(2024, 1, 1, 11), True)
    assert firing.next_slot == at(2024, 1, 1, 12)
    assert due(HOURLY_ONCE, firing.slot, 0.0, now, GRACE).slot is None


def test_run_once_then_the_on_time_slot() -> None:
    now = at(2024, 1, 1, 11, 0, 30)
    late = due(HOURLY_ONCE, at(2024, 1, 1, 8), 0.0, now, GRACE)
    assert (late.slot, late.late) == (at(2024, 1, 1, 10), True)
    assert late.next_slot is not None
    assert late.next_slot <= now
    on_time = due(HOURLY_ONCE, late.slot, 0.0, now, GRACE)
    assert (on_time.slot, on_time.late) == (at(2024, 1, 1, 11), False)


def test_a_changed_expression_counts_from_when_it_was_seen() -> None:
    # Fired last at 08:00 under the old expression; the new one was seen at 10:30.
    firing = due(HOURLY_ONCE, at(2024, 1, 1, 8), at(2024, 1, 1, 10, 30), at(2024, 1, 1, 11), GRACE)
    assert (firing.slot, firing.late) == (at(2024, 1, 1, 11), False)


def test_run_once_across_a_missing_local_time() -> None:
    # Down from Friday to Sunday noon: Sunday 02:30 does not exist in Berlin, so the latest
    # missed slot is Saturday's.
    nightly = one(cron="30 2 * * *", timezone="Europe/Berlin", missed="runOnce")
    firing = due(
        nightly,
        at(2024, 3, 29, 2, 30, zone=BERLIN),
        0.0,
        at(2024, 3, 31, 12, zone=BERLIN),
        GRACE,
    )
    assert firing.slot == at(2024, 3, 30, 2, 30, zone=BERLIN)
    assert firing.next_slot == at(2024, 4, 1, 2, 30, zone=BERLIN)


def test_a_schedule_with_no_slot_left_says_so() -> None:
    yearly = one(cron="0 0 1 1 *")
    firing = due(yearly, None, at(9999, 6, 1), at(9999, 6, 2), GRACE)
    assert firing == schedules.Firing(None, None)


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["skip", "runOnce"]),
    cron=st.sampled_from(["*/7 * * * * *", "0 * * * * *", "*/3 * * * * *", "5,6,7 * * * * *"]),
    gaps=st.lists(st.floats(0.1, 200.0), min_size=1, max_size=40),
)
def test_a_simulated_scheduler_fires_each_slot_at_most_once_by_the_policy(
    policy: str, cron: str, gaps: list[float]
) -> None:
    schedule = one(cron=cron, missed=policy)
    grace = 30.0
    start = at(2024, 1, 1)
    now, last = start, None
    fired: list[tuple[float, bool, float]] = []
    for gap in gaps:
        previous_now, now = now, now + gap
        in_between = list(
            schedule.cron.slots_between(max(last or start, start), now, schedule.zone)
        )
        fired_now = []
        while (firing := due(schedule, last, start, now, grace)).slot is not None:
            fired_now.append(firing.slot)
            fired.append((firing.slot, firing.late, now))
            last = firing.slot
        on_time = [slot for slot in in_between if slot > now - grace]
        missed = [slot for slot in in_between if slot <= now - grace]
        expected = ([missed[-1]] if missed and policy == "runOnce" else []) + on_time
        assert fired_now == expected, (previous_now - start, now - start)
    slots = [slot for slot, _, _ in fired]
    assert slots == sorted(set(slots))
    for slot, late, when in fired:
        assert slot <= when
        assert late == (slot <= when - grace)
        assert policy == "runOnce" or not late
