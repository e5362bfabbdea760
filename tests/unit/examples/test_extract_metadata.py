"""The extract-metadata example: EXIF from samples, uploads, allowed folders and URLs."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from controlplane.examples import make_samples, photo, services
from tasksdk import TaskApp
from tasksdk.testing import TaskEnvironment, finished_data


async def extract(properties: dict[str, Any], app: TaskApp | None = None) -> dict[str, Any]:
    env = TaskEnvironment(app or services.app)
    events = await env.trigger("extract-metadata", data={"extract-metadata": properties})
    return finished_data(events)


def sample_bytes(name: str) -> bytes:
    return (photo.SAMPLES_DIR / name).read_bytes()


def app_with_limits(*, max_bytes: int) -> TaskApp:
    app = TaskApp("photo-test")
    tasks = photo.PhotoTasks(photo.ImageSources(max_bytes=max_bytes), photo.Geocoder())
    app.task("extract-metadata")(tasks.extract_metadata)
    return app


async def test_the_paris_sample_has_camera_time_and_the_eiffel_tower_position() -> None:
    data = await extract({"image": "paris-gps.jpg"})

    assert (data["status"], data["result"]) == ("succeeded", "pass")
    metadata = data["extract-metadata"]
    assert metadata["format"] == "JPEG"
    assert (metadata["width"], metadata["height"]) == (64, 48)
    assert metadata["camera"] == {"make": "Canon", "model": "EOS 80D"}
    assert metadata["software"] is None
    assert metadata["takenAt"] == "2024-06-14T09:30:12+02:00"
    assert metadata["hasExif"] is True
    assert (metadata["hasGps"], metadata["edited"]) == (True, False)
    gps = metadata["gps"]
    assert gps["latitude"] == pytest.approx(48.8584, abs=1e-4)
    assert gps["longitude"] == pytest.approx(2.2945, abs=1e-4)
    assert gps["altitude"] == pytest.approx(35.0)
    assert data["message"] == "paris-gps.jpg: JPEG 64x48, Canon EOS 80D, GPS 48.8584, 2.2945"


async def test_the_zurich_sample_shows_its_editing_software() -> None:
    metadata = (await extract({"image": "zurich-edited.jpg"}))["extract-metadata"]

    assert metadata["software"] == "Adobe Photoshop 25.0"
    assert (metadata["hasGps"], metadata["edited"]) == (True, True)
    assert metadata["camera"] == {"make": "NIKON CORPORATION", "model": "NIKON Z 6"}
    assert metadata["takenAt"] == "2024-07-01T17:45:00"  # DateTimeOriginal, not the edit
    assert metadata["gps"]["latitude"] == pytest.approx(47.3769, abs=1e-4)
    assert metadata["gps"]["longitude"] == pytest.approx(8.5417, abs=1e-4)
    assert metadata["gps"]["altitude"] is None


async def test_a_photo_without_gps_passes_and_falls_back_to_datetime() -> None:
    data = await extract({"image": "no-gps.jpg"})

    assert data["result"] == "pass"
    metadata = data["extract-metadata"]
    assert metadata["gps"] is None
    assert metadata["hasGps"] is False
    assert metadata["camera"] == {"make": "FUJIFILM", "model": "X100V"}
    assert metadata["takenAt"] == "2023-12-24T16:20:00"


async def test_a_photo_without_exif_passes_with_nulls() -> None:
    data = await extract({"image": "no-exif.jpg"})

    assert data["result"] == "pass"
    assert data["extract-metadata"] == {
        "format": "JPEG",
        "width": 64,
        "height": 48,
        "camera": None,
        "software": None,
        "takenAt": None,
        "gps": None,
        "hasExif": False,
        "hasGps": False,
        "edited": False,
    }


async def test_an_uploaded_image_is_read_from_base64() -> None:
    content = base64.b64encode(sample_bytes("zurich-edited.jpg")).decode()
    wrapped = "\n".join(content[i : i + 76] for i in range(0, len(content), 76))

    data = await extract({"content": wrapped})

    assert data["result"] == "pass"
    assert data["extract-metadata"]["software"] == "Adobe Photoshop 25.0"
    assert data["message"].startswith("the uploaded image: JPEG 64x48")


async def test_southern_and_western_positions_are_negative() -> None:
    rio = make_samples.Sample(
        name="rio.jpg",
        scene=make_samples.SAMPLES[0].scene,
        make="Canon",
        gps=make_samples.GpsFix("-22.9519", "-43.2105", altitude_m=-5),
    )
    content = base64.b64encode(make_samples.render(rio)).decode()

    gps = (await extract({"content": content}))["extract-metadata"]["gps"]

    assert gps["latitude"] == pytest.approx(-22.9519, abs=1e-4)
    assert gps["longitude"] == pytest.approx(-43.2105, abs=1e-4)
    assert gps["altitude"] == pytest.approx(-5.0)


async def test_upload_that_is_not_base64_fails() -> None:
    data = await extract({"content": "this is not base64!"})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == "data.extract-metadata.content is not base64"


async def test_upload_that_is_not_an_image_fails_naming_it() -> None:
    data = await extract({"content": base64.b64encode(b"just some text").decode()})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == (
        "the uploaded image is not a readable image (not one of JPEG, PNG, TIFF, WEBP, GIF)"
    )


async def test_a_truncated_image_fails() -> None:
    content = base64.b64encode(sample_bytes("paris-gps.jpg")[:300]).decode()

    data = await extract({"content": content})

    assert data["result"] == "fail"
    assert data["message"].startswith("the uploaded image is not a readable image")


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "../photo.py"])
async def test_paths_outside_the_allowed_folders_are_refused(path: str) -> None:
    data = await extract({"image": path})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"].startswith(f"refusing to read {path!r}")
    assert "extract-metadata" not in data


async def test_an_unknown_sample_fails_listing_the_samples() -> None:
    data = await extract({"image": "eiffel.jpg"})

    assert data["result"] == "fail"
    assert "no image 'eiffel.jpg'" in data["message"]
    assert "paris-gps.jpg" in data["message"]


async def test_images_in_the_configured_folder_are_read(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(sample_bytes("paris-gps.jpg"))
    app = services.build_app(image_dirs=[tmp_path])

    by_name = await extract({"image": "holiday.jpg"}, app)
    by_path = await extract({"image": str(tmp_path / "holiday.jpg")}, app)

    assert by_name["result"] == by_path["result"] == "pass"
    assert by_name["extract-metadata"] == by_path["extract-metadata"]
    assert by_path["extract-metadata"]["camera"]["model"] == "EOS 80D"


async def test_a_symlink_out_of_the_configured_folder_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(sample_bytes("no-exif.jpg"))
    (allowed / "link.jpg").symlink_to(secret)

    data = await extract(
        {"image": str(allowed / "link.jpg")}, services.build_app(image_dirs=[allowed])
    )

    assert data["result"] == "fail"
    assert data["message"].startswith("refusing to read")


async def test_a_file_that_is_not_an_image_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not a photo")

    data = await extract({"image": "notes.jpg"}, services.build_app(image_dirs=[tmp_path]))

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"].startswith("notes.jpg is not a readable image (not one of JPEG")


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"image": "paris-gps.jpg", "content": "AAAA"},
        {"image": "paris-gps.jpg", "url": "http://127.0.0.1/x.jpg"},
    ],
)
async def test_exactly_one_image_input_is_needed(properties: dict[str, Any]) -> None:
    data = await extract(properties)

    assert data["result"] == "fail"
    assert data["message"] == photo.NEEDS_ONE_IMAGE


async def test_a_non_string_input_fails() -> None:
    data = await extract({"image": 42})

    assert data["message"] == "data.extract-metadata.image must be a non-empty string"


class SamplesHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def samples_url() -> Iterator[str]:
    handler = functools.partial(SamplesHandler, directory=str(photo.SAMPLES_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_an_image_is_fetched_from_a_url(samples_url: str) -> None:
    data = await extract({"url": f"{samples_url}/zurich-edited.jpg"})

    assert data["result"] == "pass"
    assert data["extract-metadata"]["software"] == "Adobe Photoshop 25.0"
    assert data["message"].startswith(f"{samples_url}/zurich-edited.jpg: JPEG 64x48")


async def test_an_error_status_fails(samples_url: str) -> None:
    data = await extract({"url": f"{samples_url}/missing.jpg"})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == f"{samples_url}/missing.jpg answered HTTP 404"


async def test_a_download_over_the_size_cap_fails(samples_url: str) -> None:
    data = await extract({"url": f"{samples_url}/paris-gps.jpg"}, app_with_limits(max_bytes=500))

    assert data["result"] == "fail"
    assert data["message"] == f"{samples_url}/paris-gps.jpg is larger than 500 bytes"


async def test_an_unreachable_server_is_an_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    data = await extract({"url": f"http://127.0.0.1:{port}/x.jpg"})

    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["message"].startswith(f"could not fetch http://127.0.0.1:{port}/x.jpg")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.jpg", "http://"])
async def test_other_schemes_are_refused(url: str) -> None:
    data = await extract({"url": url})

    assert (data["status"], data["result"]) == ("succeeded", "fail")
    assert data["message"] == f"refusing to fetch {url!r}: only http and https URLs are fetched"


async def test_a_png_without_exif_is_read_too() -> None:
    output = io.BytesIO()
    Image.new("RGB", (10, 20), (0, 128, 255)).save(output, "PNG")

    data = await extract({"content": base64.b64encode(output.getvalue()).decode()})

    assert data["result"] == "pass"
    metadata = data["extract-metadata"]
    assert (metadata["format"], metadata["width"], metadata["height"]) == ("PNG", 10, 20)
    assert metadata["hasExif"] is False


def test_the_image_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(photo.IMAGE_DIR_VARIABLE, "/srv/photos")
    assert services.image_dirs_from_environment() == (Path("/srv/photos"),)

    monkeypatch.setenv(photo.IMAGE_DIR_VARIABLE, " ")
    assert services.image_dirs_from_environment() == ()
