"""The checknumber example: what a caller of the task sees in the .finished event."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.examples import checknumber, services
from tasksdk.testing import TaskEnvironment, finished_data

REPORT_KEYS = {
    "number",
    "valid",
    "possible",
    "e164",
    "international",
    "country",
    "countryCallingCode",
    "region",
    "carrier",
    "numberType",
    "timeZones",
}


async def check(properties: dict[str, Any]) -> dict[str, Any]:
    env = TaskEnvironment(services.app)
    events = await env.trigger("checknumber", data={"checknumber": properties})
    assert [event["type"] for event in events] == [
        "sh.keptn.event.checknumber.started",
        "sh.keptn.event.checknumber.finished",
    ]
    return finished_data(events)


async def test_a_swiss_fixed_line_passes_with_everything_known() -> None:
    data = await check({"number": "+41 44 668 18 00"})

    assert (data["status"], data["result"]) == ("succeeded", "pass")
    assert data["checknumber"] == {
        "number": "+41 44 668 18 00",
        "valid": True,
        "possible": True,
        "e164": "+41446681800",
        "international": "+41 44 668 18 00",
        "country": "CH",
        "countryCallingCode": 41,
        "region": "Zurich",
        "carrier": None,
        "numberType": "FIXED_LINE",
        "timeZones": ["Europe/Zurich"],
    }
    assert data["message"] == "+41 44 668 18 00 is a valid fixed line number in CH"


async def test_a_swiss_mobile_names_its_carrier() -> None:
    report = (await check({"number": "+41 79 123 45 67"}))["checknumber"]

    assert report["carrier"] == "Swisscom"
    assert report["numberType"] == "MOBILE"
    assert report["region"] == "Switzerland"
    assert report["e164"] == "+41791234567"


async def test_a_london_number() -> None:
    data = await check({"number": "+44 20 7946 0958"})

    assert data["result"] == "pass"
    report = data["checknumber"]
    assert (report["country"], report["countryCallingCode"]) == ("GB", 44)
    assert report["region"] == "London"
    assert report["timeZones"] == ["Europe/London"]


async def test_a_us_number_may_be_fixed_line_or_mobile() -> None:
    report = (await check({"number": "+1 650-253-0000"}))["checknumber"]

    assert report["country"] == "US"
    assert report["numberType"] == "FIXED_LINE_OR_MOBILE"
    assert report["region"] == "Mountain View, CA"
    assert report["timeZones"] == ["America/Los_Angeles"]


async def test_the_default_region_reads_a_national_number() -> None:
    data = await check({"number": "044 668 18 00", "defaultRegion": "ch"})

    assert data["result"] == "pass"
    assert data["checknumber"]["number"] == "044 668 18 00"
    assert data["checknumber"]["e164"] == "+41446681800"


async def test_an_integer_is_read_as_its_digits() -> None:
    data = await check({"number": 446681800, "defaultRegion": "CH"})

    assert data["result"] == "pass"
    assert data["checknumber"]["number"] == "446681800"
    assert data["checknumber"]["international"] == "+41 44 668 18 00"


async def test_a_parsed_but_invalid_number_fails_with_what_is_known() -> None:
    data = await check({"number": "+41 12"})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == "+41 12 is not a valid phone number"
    report = data["checknumber"]
    assert set(report) == REPORT_KEYS
    assert (report["valid"], report["possible"]) == (False, False)
    assert (report["country"], report["countryCallingCode"]) == ("CH", 41)
    assert (report["numberType"], report["region"], report["timeZones"]) == (None, None, [])


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("call me maybe", "it does not look like a phone number"),
        ("12345", "no valid country calling code"),
    ],
)
async def test_garbage_fails_naming_the_input_and_the_reason(number: str, reason: str) -> None:
    data = await check({"number": number})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"].startswith(f"{number!r} is not a phone number: {reason}")
    assert data["checknumber"] == {
        "number": number,
        "valid": False,
        "possible": False,
        "e164": None,
        "international": None,
        "country": None,
        "countryCallingCode": None,
        "region": None,
        "carrier": None,
        "numberType": None,
        "timeZones": [],
    }


@pytest.mark.parametrize("properties", [{}, {"number": ""}, {"number": True}, {"number": [1]}])
async def test_missing_input_fails_saying_what_to_send(properties: dict[str, Any]) -> None:
    data = await check(properties)

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == checknumber.MISSING_NUMBER
    assert "checknumber" not in data


async def test_an_unknown_default_region_fails() -> None:
    data = await check({"number": "044 668 18 00", "defaultRegion": "XX"})

    assert data["result"] == "fail"
    assert "'XX' is not a region code" in data["message"]


async def test_every_answer_has_the_same_keys() -> None:
    for number in ("+41 44 668 18 00", "+41 12", "nonsense", "+800 1234 5678"):
        assert set((await check({"number": number}))["checknumber"]) == REPORT_KEYS


async def test_a_non_geographic_number_has_no_country() -> None:
    report = (await check({"number": "+800 1234 5678"}))["checknumber"]

    assert report["valid"] is True
    assert (report["country"], report["numberType"]) == (None, "TOLL_FREE")


def test_the_local_mode_serves_checknumber_from_the_examples_app() -> None:
    assert checknumber.app is services.app
    assert len(services.APPS) == 1
    assert services.APPS[0] is services.app
    assert services.app.name == "controlplane-examples"
    assert set(services.app.registrations) == {"checknumber", "extract-metadata", "geolookup"}
