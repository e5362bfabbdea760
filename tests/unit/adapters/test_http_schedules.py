"""The schedule API: list, create or replace, delete; errors name the field."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controlplane.adapters.http import create_app
from controlplane.application.ports import SlotClaim
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.scheduler import ScheduleCatalog, trigger_event
from controlplane.domain.schedules import parse_schedule
from controlplane.testing import (
    FakeDefinitions,
    FakeEngine,
    InMemoryIntegrationStore,
    InMemoryQueryStore,
)
from tests.unit.application.schedule_fakes import InMemoryScheduleStore

NOW = dt.datetime(2024, 5, 1, 12, 0, 30, tzinfo=dt.UTC).timestamp()
SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shop}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{name: deployment}]
  schedules:
    - name: nightly
      cron: "0 2 * * *"
      timezone: Europe/Berlin
      stage: dev
      sequence: delivery
      service: carts
"""
URL = "/api/controlPlane/v1/project/shop/schedule"
BODY: dict[str, Any] = {
    "cron": "*/5 * * * *",
    "stage": "dev",
    "sequence": "delivery",
    "service": "carts",
    "data": {"labels": {"team": "shop"}},
    "missed": "runOnce",
}


class Setup:
    def __init__(self) -> None:
        self.definitions = FakeDefinitions()
        self.definitions.add("shop", SHIPYARD)
        self.store = InMemoryScheduleStore(lambda: set(self.definitions.records), lambda: NOW)
        self.changes = 0
        catalog = ScheduleCatalog(
            self.store, self.definitions, clock=lambda: NOW, on_change=self._changed
        )
        self.app = create_app(
            engine=FakeEngine(),
            definitions=self.definitions,
            queries=Queries(InMemoryQueryStore()),
            registry=Registry(InMemoryIntegrationStore(), ttl=600),
            api_token=None,
            schedule_catalog=catalog,
        )

    def _changed(self) -> None:
        self.changes += 1


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=setup.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["message"]
    return message


async def test_create_replace_list_and_delete(client: httpx.AsyncClient, setup: Setup) -> None:
    created = await client.put(f"{URL}/every-five", json=BODY)
    assert created.status_code == 201, created.text
    assert created.json()["nextSlot"] == "2024-05-01T12:05:00Z"
    assert created.json()["origin"] == "api"
    replaced = await client.put(f"{URL}/every-five", json={**BODY, "cron": "@hourly"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["nextSlot"] == "2024-05-01T13:00:00Z"
    assert setup.changes == 2

    listed = (await client.get(URL)).json()["schedules"]
    assert [(s["name"], s["origin"]) for s in listed] == [
        ("nightly", "shipyard"),
        ("every-five", "api"),
    ]
    nightly = listed[0]
    assert nightly["timezone"] == "Europe/Berlin"
    assert nightly["nextSlot"] == "2024-05-02T00:00:00Z"  # 02:00 in Berlin (CEST)
    assert nightly["lastSlot"] is None
    assert listed[1]["cron"] == "@hourly"
    assert listed[1]["missed"] == "runOnce"
    assert listed[1]["data"] == {"labels": {"team": "shop"}}

    deleted = await client.delete(f"{URL}/every-five")
    assert deleted.status_code == 200, deleted.text
    assert [s["name"] for s in (await client.get(URL)).json()["schedules"]] == ["nightly"]
    assert "has no schedule 'every-five'" in problem(await client.delete(f"{URL}/every-five"), 404)


async def test_the_list_shows_the_last_slot_and_its_context(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    shipyard = setup.definitions.shipyard("shop")
    assert shipyard is not None
    slot = dt.datetime(2024, 5, 1, 0, 0, tzinfo=dt.UTC).timestamp()
    event = trigger_event("shop", shipyard.schedules[0], slot, slot)
    await setup.store.claim_slots([SlotClaim("shop", "nightly", slot, event)], "a")
    [nightly] = (await client.get(URL)).json()["schedules"]
    assert nightly["lastSlot"] == "2024-05-01T00:00:00Z"
    assert nightly["lastKeptnContext"] == event.keptn_context


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**BODY, "cron": "61 * * * *"}, "invalid schedule: cron: minute field '61'"),
        ({**BODY, "cron": "0 0 31 2 *"}, "cron: day-of-month field '31': never matches"),
        ({**BODY, "timezone": "Moon/Base"}, "timezone: 'Moon/Base' is not a known IANA"),
        ({**BODY, "missed": "twice"}, "missed: must be 'skip' or 'runOnce'"),
        ({**BODY, "stage": "prod"}, "stage: stage 'prod' is not defined in the shipyard"),
        ({**BODY, "sequence": "rollback"}, "sequence: sequence 'rollback' is not defined"),
        ({**BODY, "data": {"project": "x"}}, "data.project: is set by the schedule"),
        ({**BODY, "service": None}, "service: is required"),
        ({**BODY, "name": "other"}, "name: must be 'every-five', as in the path"),
        ({**BODY, "cronn": "x"}, "cronn: unknown key"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    assert message in problem(await client.put(f"{URL}/every-five", json=body), 400)


async def test_bad_names_and_non_object_bodies_are_400(client: httpx.AsyncClient) -> None:
    assert "name: schedule name 'Bad_Name'" in problem(
        await client.put(f"{URL}/Bad_Name", json=BODY), 400
    )
    assert "body" in problem(await client.put(f"{URL}/ok", json=["a"]), 400)
    assert "body" in problem(
        await client.put(f"{URL}/ok", content=b"{", headers={"content-type": "application/json"}),
        400,
    )


async def test_unknown_project_is_404(client: httpx.AsyncClient) -> None:
    other = "/api/controlPlane/v1/project/nope/schedule"
    assert "project 'nope' does not exist" in problem(await client.get(other), 404)
    assert "project 'nope' does not exist" in problem(
        await client.put(f"{other}/x", json=BODY), 404
    )
    assert "project 'nope' does not exist" in problem(await client.delete(f"{other}/x"), 404)


async def test_a_shipyard_schedule_name_is_409(client: httpx.AsyncClient) -> None:
    assert "defined in the shipyard of project 'shop'; change it there" in problem(
        await client.put(f"{URL}/nightly", json=BODY), 409
    )
    assert "remove it there" in problem(await client.delete(f"{URL}/nightly"), 409)


async def test_an_invalid_shipyard_is_409_and_a_broken_api_schedule_is_listed_with_why(
    client: httpx.AsyncClient, setup: Setup
) -> None:
    assert (await client.put(f"{URL}/every-five", json=BODY)).status_code == 201
    # The shipyard loses the stage the API schedule runs in.
    await setup.definitions.replace("shop", SHIPYARD.replace("dev", "qa"))
    listed = (await client.get(URL)).json()["schedules"]
    broken = next(s for s in listed if s["name"] == "every-five")
    assert "stage 'dev' is not defined" in broken["problem"]
    assert broken["nextSlot"] is None
    setup.definitions.add("shop", "not: a shipyard", error="invalid")
    assert "is invalid" in problem(await client.put(f"{URL}/every-five", json=BODY), 409)


def test_the_api_stores_what_the_shipyard_parser_reads() -> None:
    parsed, problems = parse_schedule({**BODY, "name": "x"})
    assert problems == []
    assert parsed is not None
    assert parse_schedule(parsed.document())[0] == parsed
