"""The geolookup example: where a photo was taken, and how far that is from the claim."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.examples import photo, services
from tasksdk import TaskApp
from tasksdk.testing import TaskEnvironment, finished_data

EIFFEL_TOWER = {"latitude": 48.8584, "longitude": 2.2945, "altitude": 35.0}
PARIS_ONTARIO = {"latitude": 43.2, "longitude": -80.38333, "altitude": None}


@pytest.fixture(scope="module")
def app() -> TaskApp:
    # One geocoder for the module: loading the cities takes about a second.
    return services.build_app(geocoder=photo.Geocoder())


async def lookup(app: TaskApp, data: dict[str, Any]) -> dict[str, Any]:
    events = await TaskEnvironment(app).trigger("geolookup", data=data)
    return finished_data(events)


def photo_at(gps: dict[str, Any] | None, **data: Any) -> dict[str, Any]:
    """Data as the control plane sends it after extract-metadata: its output merged in."""
    return {"extract-metadata": {"image": "x.jpg", "gps": gps}, **data}


async def test_the_eiffel_tower_is_a_few_km_from_the_claimed_paris(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, geolookup={"claimedLocation": "Paris"}))

    assert (data["status"], data["result"]) == ("succeeded", "pass")
    report = data["geolookup"]
    assert report["place"]["country"] == "FR"
    assert report["place"]["admin1"] == "Ile-de-France"
    assert report["coordinates"] == {"latitude": 48.8584, "longitude": 2.2945}
    assert report["claimed"]["name"] == "Paris"
    assert report["claimed"]["country"] == "FR"  # not Paris, Ontario, first in the list
    assert report["distanceKm"] < 10
    assert report["distanceKm"] == round(report["distanceKm"], 1)
    assert f"{report['distanceKm']} km from the claimed Paris" in data["message"]


async def test_zurich_is_about_490_km_from_the_eiffel_tower(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, geolookup={"claimedLocation": "Zurich, CH"}))

    assert data["result"] == "pass"
    claimed = data["geolookup"]["claimed"]
    assert (claimed["name"], claimed["country"], claimed["matches"]) == ("Zurich", "CH", 1)
    assert 480 < data["geolookup"]["distanceKm"] < 505


async def test_claimed_coordinates_are_measured_directly(app: TaskApp) -> None:
    claim = {"latitude": 47.3769, "longitude": 8.5417}

    data = await lookup(app, photo_at(EIFFEL_TOWER, claimedLocation=claim))

    report = data["geolookup"]
    assert report["claimed"] == {**claim, "name": None, "country": None, "matches": None}
    assert 480 < report["distanceKm"] < 505
    assert "km from the claimed position" in data["message"]


async def test_the_claim_may_come_from_the_top_level_data(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, claimedLocation="Zürich"))

    assert data["geolookup"]["claimed"]["name"] == "Zurich"


async def test_an_ambiguous_name_prefers_the_photo_country_and_says_so(app: TaskApp) -> None:
    data = await lookup(app, photo_at(PARIS_ONTARIO, claimedLocation="paris"))

    claimed = data["geolookup"]["claimed"]
    assert (claimed["name"], claimed["country"]) == ("Paris", "CA")
    assert claimed["matches"] > 1
    assert data["geolookup"]["distanceKm"] < 1
    assert f"{claimed['matches']} places are named 'paris'" in data["message"]
    assert "the first in the photo's country" in data["message"]


async def test_an_ambiguous_name_elsewhere_takes_the_first_listed(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, claimedLocation="Springfield"))

    assert data["result"] == "pass"
    assert data["geolookup"]["claimed"]["matches"] > 1
    assert "the first in the list" in data["message"]


async def test_no_gps_is_a_warning_with_nothing_looked_up(app: TaskApp) -> None:
    data = await lookup(app, photo_at(None, claimedLocation="Paris"))

    assert (data["status"], data["result"]) == ("succeeded", "warning")
    assert data["message"] == "the image has no GPS position"
    assert data["geolookup"] == {
        "place": None,
        "coordinates": None,
        "claimed": None,
        "distanceKm": None,
    }


async def test_no_metadata_at_all_is_the_same_warning(app: TaskApp) -> None:
    data = await lookup(app, {})

    assert (data["result"], data["message"]) == ("warning", photo.NO_GPS)


async def test_an_unknown_place_is_a_warning_naming_it(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, claimedLocation="Nowhere Special, FR"))

    assert (data["status"], data["result"]) == ("succeeded", "warning")
    assert "'Nowhere Special, FR' is not in the offline place list" in data["message"]
    assert data["geolookup"]["place"]["country"] == "FR"
    assert (data["geolookup"]["claimed"], data["geolookup"]["distanceKm"]) == (None, None)


async def test_a_name_in_another_country_than_claimed_is_unknown(app: TaskApp) -> None:
    data = await lookup(app, photo_at(EIFFEL_TOWER, claimedLocation="Zurich, DE"))

    assert data["result"] == "warning"


async def test_a_position_given_to_the_task_wins(app: TaskApp) -> None:
    data = await lookup(
        app,
        photo_at(EIFFEL_TOWER, geolookup={"latitude": 47.3769, "longitude": 8.5417}),
    )

    assert data["result"] == "pass"
    assert data["geolookup"]["place"]["country"] == "CH"
    assert data["message"].startswith("taken near ")
    assert data["geolookup"]["claimed"] is None


@pytest.mark.parametrize(
    "data",
    [
        photo_at({"latitude": 95.0, "longitude": 2.0}),
        photo_at({"latitude": "48.8", "longitude": 2.0}),
        {"geolookup": {"latitude": 48.8}},
        photo_at(EIFFEL_TOWER, claimedLocation=42),
        photo_at(EIFFEL_TOWER, claimedLocation={"latitude": 48.8, "longitude": 500}),
    ],
)
async def test_unusable_positions_and_claims_fail(app: TaskApp, data: dict[str, Any]) -> None:
    result = await lookup(app, data)

    assert (result["status"], result["result"]) == ("succeeded", "fail")
    assert "geolookup" not in result


async def test_the_photo_from_extract_metadata_flows_into_geolookup(app: TaskApp) -> None:
    env = TaskEnvironment(app)
    extracted = finished_data(
        await env.trigger("extract-metadata", data={"extract-metadata": {"image": "paris-gps.jpg"}})
    )
    # What the control plane sends geolookup: the trigger's data plus the earlier output.
    data = {
        "extract-metadata": {"image": "paris-gps.jpg", **extracted["extract-metadata"]},
        "claimedLocation": "Zurich, CH",
    }

    looked_up = finished_data(await env.trigger("geolookup", data=data))

    assert looked_up["result"] == "pass"
    assert 480 < looked_up["geolookup"]["distanceKm"] < 505


def test_haversine_matches_a_known_distance() -> None:
    paris = photo.Coordinates(48.8566, 2.3522)
    london = photo.Coordinates(51.5074, -0.1278)

    assert photo.haversine_km(paris, london) == pytest.approx(343.5, abs=1.0)
    assert photo.haversine_km(paris, paris) == 0.0


@pytest.mark.parametrize(
    ("claim", "split"),
    [
        ("Paris", ("Paris", None)),
        ("Paris, fr", ("Paris", "FR")),
        (" Zurich ,CH ", ("Zurich", "CH")),
        ("Washington, D.C.", ("Washington, D.C.", None)),
        (", FR", (", FR", None)),
    ],
)
def test_a_claim_splits_into_name_and_country(claim: str, split: tuple[str, str | None]) -> None:
    assert photo.split_claim(claim) == split
