"""``spec.schedules`` in a shipyard: parsed, checked against the stages, with paths and lines."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.errors import InvalidShipyard, Problem
from controlplane.domain.shipyard import parse_shipyard


def shipyard(*schedules: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stages": [
            {"name": "dev", "sequences": [{"name": "delivery", "tasks": [{"name": "deploy"}]}]},
            {"name": "prod", "sequences": []},
        ],
        "schedules": list(schedules),
    }
    body.update(spec or {})
    return {"apiVersion": "spec.keptn.sh/0.2.4", "kind": "Shipyard", "spec": body}


def schedule(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "nightly",
        "cron": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "stage": "dev",
        "sequence": "delivery",
        "service": "carts",
        "data": {"labels": {"why": "nightly build"}},
        "missed": "runOnce",
    }
    base.update(changes)
    return base


def problems(document: dict[str, Any], lines: dict[str, int] | None = None) -> list[Problem]:
    with pytest.raises(InvalidShipyard) as caught:
        parse_shipyard(document, source="shop.yaml", lines=lines)
    return list(caught.value.problems)


def test_schedules_are_parsed_into_the_shipyard() -> None:
    parsed = parse_shipyard(shipyard(schedule(), schedule(name="eval", sequence="evaluation")))
    assert [s.name for s in parsed.schedules] == ["nightly", "eval"]
    nightly = parsed.schedules[0]
    assert (nightly.stage, nightly.sequence, nightly.service) == ("dev", "delivery", "carts")
    assert nightly.timezone == "Europe/Berlin"
    assert nightly.missed == "runOnce"
    assert nightly.data == {"labels": {"why": "nightly build"}}


def test_a_shipyard_without_schedules_has_none() -> None:
    document = shipyard()
    del document["spec"]["schedules"]
    assert parse_shipyard(document).schedules == ()


def test_the_implicit_evaluation_sequence_may_be_scheduled_in_any_stage() -> None:
    parsed = parse_shipyard(shipyard(schedule(stage="prod", sequence="evaluation")))
    assert parsed.schedules[0].stage == "prod"


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (schedule(stage="staging"), "spec.schedules[0].stage", "stage 'staging' is not defined"),
        (
            schedule(sequence="rollback"),
            "spec.schedules[0].sequence",
            "sequence 'rollback' is not defined in stage 'dev'",
        ),
        (
            schedule(stage="prod"),
            "spec.schedules[0].sequence",
            "sequence 'delivery' is not defined in stage 'prod'",
        ),
        (schedule(cron="* * * * * * *"), "spec.schedules[0].cron", "expected 5 fields"),
        (schedule(timezone="Berlin"), "spec.schedules[0].timezone", "not a known IANA"),
        (schedule(missed="later"), "spec.schedules[0].missed", "must be 'skip' or 'runOnce'"),
    ],
)
def test_problems_name_the_field(entry: dict[str, Any], path: str, message: str) -> None:
    found = problems(shipyard(entry))
    assert [(p.path, message in p.message) for p in found] == [(path, True)], found


def test_problems_carry_the_yaml_line() -> None:
    lines = {"spec.schedules[0]": 12, "spec.schedules[0].cron": 14}
    found = problems(shipyard(schedule(cron="0 25 * * *")), lines)
    assert found == [
        Problem("spec.schedules[0].cron", "hour field '25': 25 is out of range 0-23", 14)
    ]
    assert "shop.yaml:14: spec.schedules[0].cron: hour field '25'" in found[0].render("shop.yaml")


def test_schedule_problems_are_reported_with_the_stage_problems() -> None:
    document = shipyard(schedule(cron="bad"))
    document["spec"]["stages"][0]["name"] = "Dev"
    paths = {p.path for p in problems(document)}
    assert {"spec.stages[0].name", "spec.schedules[0].cron"} <= paths


def test_schedules_must_be_a_list() -> None:
    found = problems(shipyard(spec={"schedules": {"nightly": "0 2 * * *"}}))
    assert [(p.path, p.message) for p in found] == [
        ("spec.schedules", "must be a list of schedules, got a mapping")
    ]


def test_duplicate_names() -> None:
    found = problems(shipyard(schedule(), schedule(cron="@hourly")))
    assert [(p.path, p.message) for p in found] == [
        ("spec.schedules[1].name", "schedule 'nightly' is defined twice")
    ]
