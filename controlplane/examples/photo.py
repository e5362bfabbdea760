"""Photo tasks: ``extract-metadata`` reads a photo's EXIF, ``geolookup`` places it on a map.

Together they are the first two tasks of ``sequences/seed.yaml``'s ``judge-photo``: was this
photo taken where somebody claims it was, and has it been edited? Both work offline: Pillow
reads the EXIF, and reverse_geocoder's bundled list of GeoNames cities (every place with
more than 1000 inhabitants) names the place.

``extract-metadata`` takes exactly one of, under ``data.extract-metadata``:

- ``image``: a sample name such as ``paris-gps.jpg`` (see ``samples/``), or a path inside
  the samples folder or the folder named by ``CONTROLPLANE_EXAMPLES_IMAGE_DIR``; any other
  path is refused;
- ``content``: the image bytes, base64-encoded (an upload; mind the 64 KiB event limit);
- ``url``: an ``http``/``https`` URL, fetched within 5 seconds and up to 5 MB.

It answers ``data.extract-metadata`` with ``format`` (``"JPEG"``), ``width`` and ``height``
(pixels), ``camera`` (``{"make", "model"}`` or null), ``software`` (the editing program, or
null), ``takenAt`` (ISO 8601 from DateTimeOriginal, else DateTime, or null), ``gps``
(``{"latitude", "longitude", "altitude"}`` in degrees and metres, altitude may be null; or
null), ``hasExif``, and two yes/no facts for quality gates: ``hasGps`` and ``edited`` (an
editing program is named). A photo without EXIF passes with nulls; input that is not an
image fails.

``geolookup`` reads the position from ``data.extract-metadata.gps`` (the previous task's
output), or from ``data.geolookup.latitude``/``longitude`` when those are given, and the
claim from ``data.geolookup.claimedLocation`` (or a top-level ``data.claimedLocation``):
``{"latitude", "longitude"}`` or a place name such as ``"Paris"`` or ``"Zurich, CH"``. It
answers ``data.geolookup`` with ``place`` (``{"name", "admin1", "admin2", "country"}`` of
the nearest listed place), ``coordinates`` (the photo's position), ``claimed`` (``{"name",
"country", "latitude", "longitude", "matches"}`` or null) and ``distanceKm`` (great-circle
distance from the photo to the claimed place, to 0.1 km, or null). Judging the distance is
left to a later task. No position, or a claimed name that is not in the list, finishes with
result ``warning``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import dataclasses
import importlib.resources
import io
import itertools
import math
import numbers
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

import httpx
from PIL import ExifTags, Image, UnidentifiedImageError

from tasksdk import TaskContext, TaskErrored, TaskFailed

SAMPLES_DIR = Path(__file__).parent / "samples"
IMAGE_DIR_VARIABLE = "CONTROLPLANE_EXAMPLES_IMAGE_DIR"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
NO_GPS = "the image has no GPS position"
NEEDS_ONE_IMAGE = (
    "extract-metadata needs exactly one of data.extract-metadata.image (a sample name such as"
    " paris-gps.jpg), .content (the image as base64) or .url (http or https)"
)

# Formats that Pillow parses itself; others (EPS via Ghostscript, ...) are not offered to
# input from strangers. The JPEG opener also reads the JPEGs of cameras that Pillow names
# MPO (multi-picture), and reports them so.
_IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "GIF")
_EXIF_TIMESTAMP = "%Y:%m:%d %H:%M:%S"
_UTC_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")
_CITIES_FILE = "rg_cities1000.csv"


class Camera(TypedDict):
    """The camera that took the photo, as its EXIF names it."""

    make: str | None
    model: str | None


class Gps(TypedDict):
    """Where the photo was taken: degrees north and east, metres above sea level."""

    latitude: float
    longitude: float
    altitude: float | None


class Metadata(TypedDict):
    """The output of ``extract-metadata``."""

    format: str
    width: int
    height: int
    camera: Camera | None
    software: str | None
    takenAt: str | None
    gps: Gps | None
    hasExif: bool
    # Yes/no facts as booleans, so a quality gate can read them as 1 and 0.
    hasGps: bool
    edited: bool


class PlaceOutput(TypedDict):
    """A listed place: its name, first- and second-level divisions, ISO country code."""

    name: str
    admin1: str | None
    admin2: str | None
    country: str


class CoordinatesOutput(TypedDict):
    """A position in degrees."""

    latitude: float
    longitude: float


class Claim(TypedDict):
    """Where somebody says the photo was taken; ``name`` and ``matches`` for a place name."""

    name: str | None
    country: str | None
    latitude: float
    longitude: float
    matches: int | None


class GeolookupReport(TypedDict):
    """The output of ``geolookup``."""

    place: PlaceOutput | None
    coordinates: CoordinatesOutput | None
    claimed: Claim | None
    distanceKm: float | None


@dataclasses.dataclass(frozen=True)
class Coordinates:
    """A position in degrees north and east."""

    latitude: float
    longitude: float

    def as_output(self) -> CoordinatesOutput:
        return {"latitude": self.latitude, "longitude": self.longitude}


@dataclasses.dataclass(frozen=True)
class Place:
    """One row of the cities list."""

    name: str
    admin1: str | None
    admin2: str | None
    country: str
    position: Coordinates

    def describe(self) -> str:
        """Name the place for people, e.g. ``Paris, Ile-de-France, FR``."""
        return ", ".join(part for part in (self.name, self.admin1, self.country) if part)

    def as_output(self) -> PlaceOutput:
        return {
            "name": self.name,
            "admin1": self.admin1,
            "admin2": self.admin2,
            "country": self.country,
        }


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """Image bytes and how to name them in messages."""

    label: str
    content: bytes


class Geocoder:
    """Offline place lookups in reverse_geocoder's list of GeoNames cities.

    Loading the list and its search tree takes about a second and some 100 MB, so it
    happens once, on first use, under a lock; the methods block and belong in a worker
    thread. One instance is shared by the tasks of an app; reverse_geocoder itself keeps
    one search tree per process.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # loading the tree reads the text, both locked
        self._searcher: Any = None
        self._cities: str | None = None

    def nearest(self, position: Coordinates) -> Place:
        """Find the listed place nearest to a position.

        Args:
            position: Where the photo was taken.

        Returns:
            The nearest place (by distance in degrees, as reverse_geocoder measures it).
        """
        (row,) = self._loaded_searcher().query([(position.latitude, position.longitude)])
        return _place(row["name"], row["admin1"], row["admin2"], row["cc"], row["lat"], row["lon"])

    def places_named(self, name: str) -> list[Place]:
        """Find every listed place with a name, ignoring case and accents.

        Args:
            name: A place name such as ``Zürich``; the list spells names in ASCII.

        Returns:
            The places in the list's order (which groups them by country).
        """
        wanted = _ascii_folded(name)
        if not wanted:
            return []
        lines = itertools.islice(self._cities_text().splitlines(), 1, None)  # skip the header
        # Parse only the lines that can match: the whole file takes half a second to parse.
        candidates = (line for line in lines if wanted in line.casefold())
        return [
            _place(city, admin1, admin2, country, lat, lon)
            for lat, lon, city, admin1, admin2, country in csv.reader(candidates)
            if city.casefold() == wanted
        ]

    def _loaded_searcher(self) -> Any:
        with self._lock:
            if self._searcher is None:
                # Imported here: it pulls in numpy and scipy, which only this task needs.
                import reverse_geocoder

                # mode=1 is the single-process tree (mode 2 starts a multiprocessing pool).
                # Handing it the text keeps it from opening (and leaking) the file itself and
                # from printing "Loading formatted geocoded file..." on stdout.
                cities = io.StringIO(self._cities_text())
                self._searcher = reverse_geocoder.RGeocoder(mode=1, verbose=False, stream=cities)
            return self._searcher

    def _cities_text(self) -> str:
        with self._lock:
            if self._cities is None:
                cities = importlib.resources.files("reverse_geocoder").joinpath(_CITIES_FILE)
                self._cities = cities.read_text(encoding="utf-8")
            return self._cities


class ImageSources:
    """Where ``extract-metadata`` may read an image from, and how much of it.

    Paths are confined to the samples folder and the given folders, after following
    symbolic links, so a task input cannot read arbitrary files of the host.
    """

    def __init__(
        self,
        image_dirs: Iterable[Path] = (),
        *,
        max_bytes: int = MAX_IMAGE_BYTES,
        fetch_timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self._roots = tuple(path.resolve() for path in (SAMPLES_DIR, *image_dirs))
        self._max_bytes = max_bytes
        self._fetch_timeout = fetch_timeout

    async def load(self, properties: Mapping[str, Any]) -> LoadedImage:
        """Read the image named by the task input.

        Args:
            properties: ``data.extract-metadata``, with one of ``image``, ``content``, ``url``.

        Returns:
            The image bytes and a label for messages.

        Raises:
            TaskFailed: If the input is missing, ambiguous, refused or unreadable.
            TaskErrored: If a URL could not be reached.
        """
        given = [key for key in ("image", "content", "url") if properties.get(key) is not None]
        if len(given) != 1:
            raise TaskFailed(NEEDS_ONE_IMAGE)
        key = given[0]
        value = properties[key]
        if not isinstance(value, str) or not value.strip():
            raise TaskFailed(f"data.extract-metadata.{key} must be a non-empty string")
        if key == "image":
            return await asyncio.to_thread(self.read_file, value)
        if key == "content":
            return LoadedImage("the uploaded image", self.decode_upload(value))
        return LoadedImage(value, await self.fetch(value))

    def read_file(self, value: str) -> LoadedImage:
        """Read a sample or an image from an allowed folder.

        Args:
            value: A sample name, or a path: relative ones are looked up in the samples
                folder and then in the allowed folders; absolute ones must lie inside one.

        Returns:
            The file's bytes.

        Raises:
            TaskFailed: If the path leads outside the allowed folders, names no file, or
                the file is too large.
        """
        path = self._locate(value)
        with path.open("rb") as file:
            content = file.read(self._max_bytes + 1)
        if len(content) > self._max_bytes:
            raise TaskFailed(f"{value} is larger than {self._max_bytes} bytes")
        return LoadedImage(value, content)

    def decode_upload(self, value: str) -> bytes:
        """Decode an uploaded image.

        Args:
            value: The image bytes in base64 (line breaks allowed).

        Returns:
            The decoded bytes.

        Raises:
            TaskFailed: If the text is not base64 or decodes to too many bytes.
        """
        compact = "".join(value.split())
        if len(compact) > (self._max_bytes // 3 + 1) * 4:
            raise TaskFailed(f"the uploaded image is larger than {self._max_bytes} bytes")
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error:
            raise TaskFailed("data.extract-metadata.content is not base64") from None

    async def fetch(self, value: str) -> bytes:
        """Download an image over HTTP(S), within the time and size limits.

        Args:
            value: An ``http`` or ``https`` URL.

        Returns:
            The response body.

        Raises:
            TaskFailed: If the URL is refused, answers with an error status, or sends too
                much.
            TaskErrored: If the server cannot be reached or is too slow.
        """
        url = _http_url(value)
        try:
            async with (
                asyncio.timeout(self._fetch_timeout),
                httpx.AsyncClient(timeout=self._fetch_timeout, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.is_error:
                    raise TaskFailed(f"{value} answered HTTP {response.status_code}")
                return await self._capped_body(response, value)
        except (httpx.HTTPError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise TaskErrored(f"could not fetch {value}: {reason}") from exc

    def _locate(self, value: str) -> Path:
        requested = Path(value)
        candidates = (
            [requested] if requested.is_absolute() else [root / requested for root in self._roots]
        )
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
                raise TaskFailed(self._refusal(value)) from None
            if not any(resolved.is_relative_to(root) for root in self._roots):
                raise TaskFailed(self._refusal(value))
            if resolved.is_file():
                return resolved
        samples = ", ".join(sorted(path.name for path in SAMPLES_DIR.glob("*.jpg")))
        raise TaskFailed(f"there is no image {value!r} (the samples are {samples})")

    def _refusal(self, value: str) -> str:
        return (
            f"refusing to read {value!r}: images are read only from the samples folder"
            f" or the folder named by {IMAGE_DIR_VARIABLE}"
        )

    async def _capped_body(self, response: httpx.Response, value: str) -> bytes:
        too_large = f"{value} is larger than {self._max_bytes} bytes"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise TaskFailed(too_large)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._max_bytes:
                raise TaskFailed(too_large)
        return bytes(body)


class PhotoTasks:
    """The handlers of ``extract-metadata`` and ``geolookup``, with what they share."""

    def __init__(self, sources: ImageSources, geocoder: Geocoder) -> None:
        self._sources = sources
        self._geocoder = geocoder

    async def extract_metadata(self, ctx: TaskContext) -> dict[str, Any]:
        """Handle ``extract-metadata``: read the image and report its EXIF.

        Args:
            ctx: The task run; its properties name the image.

        Returns:
            ``{"extract-metadata": Metadata}`` and a one-line summary.

        Raises:
            TaskFailed: If the input is unusable or not an image.
            TaskErrored: If a URL could not be reached.
        """
        image = await self._sources.load(ctx.properties)
        metadata = await asyncio.to_thread(read_metadata, image)
        return {"extract-metadata": metadata, "message": _summary(image.label, metadata)}

    async def geolookup(self, ctx: TaskContext) -> dict[str, Any]:
        """Handle ``geolookup``: name the place of the photo and measure the claim against it.

        Args:
            ctx: The task run; the position comes from the earlier ``extract-metadata``.

        Returns:
            ``{"geolookup": GeolookupReport}`` and a message; result ``warning`` when there
            is no position or the claimed place is unknown.

        Raises:
            TaskFailed: If a position or claim is given in an unusable shape.
        """
        position = photo_position(ctx)
        claim = claimed_location(ctx)
        report: GeolookupReport = {
            "place": None,
            "coordinates": None,
            "claimed": None,
            "distanceKm": None,
        }
        if position is None:
            return {"geolookup": report, "result": "warning", "message": NO_GPS}
        place = await asyncio.to_thread(self._geocoder.nearest, position)
        report["place"] = place.as_output()
        report["coordinates"] = position.as_output()
        taken = f"taken near {place.describe()}"
        if claim is None:
            return {"geolookup": report, "message": taken}
        resolved = await self._resolve(claim, photo_country=place.country)
        if resolved is None:
            unknown = f"{taken}; the claimed place {claim!r} is not in the offline place list"
            return {"geolookup": report, "result": "warning", "message": unknown}
        claimed, note = resolved
        claimed_position = Coordinates(claimed["latitude"], claimed["longitude"])
        report["claimed"] = claimed
        report["distanceKm"] = distance = round(haversine_km(position, claimed_position), 1)
        what = claimed["name"] or "position"
        return {
            "geolookup": report,
            "message": f"{taken}, {distance} km from the claimed {what}{note}",
        }

    async def _resolve(
        self, claim: str | Coordinates, *, photo_country: str
    ) -> tuple[Claim, str] | None:
        if isinstance(claim, Coordinates):
            return _claimed_position(claim), ""
        name, country = split_claim(claim)
        candidates = await asyncio.to_thread(self._geocoder.places_named, name)
        return resolve_claim(claim, candidates, country=country, photo_country=photo_country)


def read_metadata(image: LoadedImage) -> Metadata:
    """Read what a photo says about itself; blocking, so run it in a worker thread.

    Only the header and the EXIF are read: the pixels are never decoded.

    Args:
        image: The image bytes.

    Returns:
        The metadata; fields the photo does not carry are null.

    Raises:
        TaskFailed: If the bytes are not an image Pillow reads, or declare too many pixels.
    """
    try:
        with Image.open(io.BytesIO(image.content), formats=_IMAGE_FORMATS) as opened:
            exif = opened.getexif()
            base = dict(exif)
            details = dict(exif.get_ifd(ExifTags.IFD.Exif))
            gps = dict(exif.get_ifd(ExifTags.IFD.GPSInfo))
            image_format, (width, height) = opened.format or "unknown", opened.size
    except Image.DecompressionBombError:
        raise TaskFailed(f"{image.label} has more pixels than Pillow accepts") from None
    except UnidentifiedImageError:
        kinds = ", ".join(_IMAGE_FORMATS)
        raise TaskFailed(f"{image.label} is not a readable image (not one of {kinds})") from None
    except Exception as exc:
        # Pillow's parsers raise many kinds of exceptions on malformed input (OSError,
        # SyntaxError, struct.error, ...); all of them mean "not an image we can read".
        raise TaskFailed(f"{image.label} is not a readable image ({exc})") from None
    make, model = _text(base.get(ExifTags.Base.Make)), _text(base.get(ExifTags.Base.Model))
    software = _text(base.get(ExifTags.Base.Software))
    position = _gps(gps)
    return {
        "format": image_format,
        "width": width,
        "height": height,
        "camera": {"make": make, "model": model} if make or model else None,
        "software": software,
        "takenAt": _taken_at(base, details),
        "gps": position,
        "hasExif": bool(base),
        "hasGps": position is not None,
        "edited": software is not None,
    }


def photo_position(ctx: TaskContext) -> Coordinates | None:
    """Where the photo was taken: given to this task, or found by ``extract-metadata``.

    Args:
        ctx: The task run.

    Returns:
        The position, or None if nobody knows it.

    Raises:
        TaskFailed: If a position is given in an unusable shape.
    """
    if "latitude" in ctx.properties or "longitude" in ctx.properties:
        return _coordinates(ctx.properties, "data.geolookup")
    metadata = ctx.data.get("extract-metadata")
    gps = metadata.get("gps") if isinstance(metadata, Mapping) else None
    return None if gps is None else _coordinates(gps, "data.extract-metadata.gps")


def claimed_location(ctx: TaskContext) -> str | Coordinates | None:
    """Where somebody says the photo was taken.

    Args:
        ctx: The task run; ``data.geolookup.claimedLocation`` wins over ``data.claimedLocation``.

    Returns:
        A place name, a position, or None if nothing is claimed.

    Raises:
        TaskFailed: If the claim is neither a place name nor a position.
    """
    claim = ctx.properties.get("claimedLocation")
    where = "data.geolookup.claimedLocation"
    if claim is None:
        claim, where = ctx.data.get("claimedLocation"), "data.claimedLocation"
    if claim is None:
        return None
    if isinstance(claim, str) and claim.strip():
        return claim.strip()
    if isinstance(claim, Mapping):
        return _coordinates(claim, where)
    raise TaskFailed(f"{where} must be a place name such as 'Paris, FR' or {{latitude, longitude}}")


def split_claim(claim: str) -> tuple[str, str | None]:
    """Split a claimed place such as ``Paris, FR`` into its name and country code.

    Args:
        claim: A place name, optionally followed by a comma and a two-letter country code.

    Returns:
        The name, and the upper-cased country code or None.
    """
    name, comma, suffix = claim.rpartition(",")
    code = suffix.strip()
    if comma and name.strip() and len(code) == 2 and code.isalpha():
        return name.strip(), code.upper()
    return claim.strip(), None


def resolve_claim(
    claim: str, candidates: Sequence[Place], *, country: str | None, photo_country: str
) -> tuple[Claim, str] | None:
    """Choose which of the places with the claimed name is meant.

    A country code in the claim (``Paris, FR``) keeps only that country's places. Of the
    places that fit, the first in the list wins, except that one in the photo's own country
    goes first: "Paris" next to the Eiffel Tower means Paris, France, not Paris, Ontario,
    which comes earlier in the list.

    Args:
        claim: The claimed place as given, e.g. ``Paris`` or ``Paris, FR``, for the note.
        candidates: The listed places with the claimed name, in list order.
        country: The country code given with the name, if any.
        photo_country: The country code of the place the photo was taken in.

    Returns:
        The claim with its position and ``matches`` (how many places fit the claim as
        written), and a note for the message when several fit; None if none fits.
    """
    fitting = [place for place in candidates if country is None or place.country == country]
    if not fitting:
        return None
    local = [place for place in fitting if place.country == photo_country]
    chosen = (local or fitting)[0]
    note = ""
    if len(fitting) > 1:
        why = "the first in the photo's country" if local else "the first in the list"
        note = f" ({len(fitting)} places are named {claim!r}; took {chosen.describe()}, {why})"
    claimed: Claim = {
        "name": chosen.name,
        "country": chosen.country,
        "latitude": chosen.position.latitude,
        "longitude": chosen.position.longitude,
        "matches": len(fitting),
    }
    return claimed, note


def haversine_km(start: Coordinates, end: Coordinates) -> float:
    """Great-circle distance on a sphere of the Earth's mean radius.

    Args:
        start: One position.
        end: The other.

    Returns:
        The distance in kilometres (within about 0.5% of the true one).
    """
    lat1, lat2 = math.radians(start.latitude), math.radians(end.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(end.longitude - start.longitude)
    a = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _claimed_position(position: Coordinates) -> Claim:
    return {
        "name": None,
        "country": None,
        "latitude": position.latitude,
        "longitude": position.longitude,
        "matches": None,
    }


def _coordinates(value: object, where: str) -> Coordinates:
    fields: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
    latitude = _bounded(fields.get("latitude"), 90)
    longitude = _bounded(fields.get("longitude"), 180)
    if latitude is None or longitude is None:
        raise TaskFailed(
            f"{where} needs latitude (-90 to 90) and longitude (-180 to 180) in degrees"
        )
    return Coordinates(latitude, longitude)


def _bounded(value: object, limit: float) -> float | None:
    """The value as degrees if it is a finite number within ±limit; JSON gives int or float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    degrees = float(value)
    return degrees if math.isfinite(degrees) and -limit <= degrees <= limit else None


def _place(
    name: str, admin1: str, admin2: str, country: str, latitude: str, longitude: str
) -> Place:
    return Place(
        name=name,
        admin1=admin1 or None,
        admin2=admin2 or None,
        country=country,
        position=Coordinates(float(latitude), float(longitude)),
    )


def _ascii_folded(name: str) -> str:
    # The list spells names in ASCII ("Zurich"), so "Zürich" should find it too.
    decomposed = unicodedata.normalize("NFKD", name)
    return decomposed.encode("ascii", "ignore").decode("ascii").strip().casefold()


def _http_url(value: str) -> httpx.URL:
    refusal = f"refusing to fetch {value!r}: only http and https URLs are fetched"
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        raise TaskFailed(refusal) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise TaskFailed(refusal)
    return url


def _text(value: object) -> str | None:
    # EXIF strings come as str or bytes, often padded with NULs or spaces.
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 \t\r\n") or None


def _taken_at(base: Mapping[int, Any], details: Mapping[int, Any]) -> str | None:
    stamps = (
        (
            details.get(ExifTags.Base.DateTimeOriginal),
            details.get(ExifTags.Base.OffsetTimeOriginal),
        ),
        (base.get(ExifTags.Base.DateTime), details.get(ExifTags.Base.OffsetTime)),
    )
    for stamp, offset in stamps:
        text = _text(stamp)
        try:
            taken = datetime.strptime(text or "", _EXIF_TIMESTAMP)
        except ValueError:
            continue  # absent, or a camera's "0000:00:00 00:00:00"
        zone = _text(offset)
        return taken.isoformat() + (zone if zone and _UTC_OFFSET.fullmatch(zone) else "")
    return None


def _gps(tags: Mapping[int, Any]) -> Gps | None:
    latitude = _bounded(
        _degrees(tags.get(ExifTags.GPS.GPSLatitude), tags.get(ExifTags.GPS.GPSLatitudeRef), "S"),
        90,
    )
    longitude = _bounded(
        _degrees(tags.get(ExifTags.GPS.GPSLongitude), tags.get(ExifTags.GPS.GPSLongitudeRef), "W"),
        180,
    )
    if latitude is None or longitude is None:
        return None
    altitude = _altitude(tags.get(ExifTags.GPS.GPSAltitude), tags.get(ExifTags.GPS.GPSAltitudeRef))
    return {"latitude": round(latitude, 7), "longitude": round(longitude, 7), "altitude": altitude}


def _degrees(dms: object, ref: object, negative: str) -> float | None:
    # EXIF stores a coordinate as three unsigned rationals (degrees, minutes, seconds) and
    # its hemisphere as a separate N/S or E/W letter.
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    if not all(isinstance(part, numbers.Real) for part in dms):
        return None
    degrees, minutes, seconds = (float(part) for part in dms)  # a 0/0 rational is NaN
    value = degrees + minutes / 60 + seconds / 3600
    return -value if (_text(ref) or "").upper() == negative else value


def _altitude(altitude: object, ref: object) -> float | None:
    if not isinstance(altitude, numbers.Real) or not math.isfinite(float(altitude)):
        return None
    metres = float(altitude)
    # Reference 1 means below sea level; it comes as a byte string or an int.
    below = ref == 1 or (isinstance(ref, bytes) and ref[:1] == b"\x01")
    return round(-metres if below else metres, 2)


def _summary(label: str, metadata: Metadata) -> str:
    parts = [f"{label}: {metadata['format']} {metadata['width']}x{metadata['height']}"]
    camera = metadata["camera"]
    if camera is not None:
        parts.append(" ".join(part for part in (camera["make"], camera["model"]) if part))
    if metadata["software"]:
        parts.append(f"software {metadata['software']}")
    gps = metadata["gps"]
    parts.append(f"GPS {gps['latitude']}, {gps['longitude']}" if gps else "no GPS")
    if not metadata["hasExif"]:
        parts.append("no EXIF")
    return ", ".join(parts)
