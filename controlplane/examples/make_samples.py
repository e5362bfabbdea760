"""Draw the sample photos of ``extract-metadata`` and write their EXIF.

Run ``python -m controlplane.examples.make_samples`` after changing a sample below, and
commit the JPEGs it writes to ``controlplane/examples/samples/``. The output depends only on
this file and the installed Pillow (no clock, no randomness), so running it again rewrites
the same bytes.

The samples, each 64x48 pixels and under 2 KB:

- ``paris-gps.jpg``: a Canon EOS 80D photo with its time and the GPS position of the Eiffel
  Tower (48.8584 N, 2.2945 E, 35 m); no editing software.
- ``zurich-edited.jpg``: a Nikon photo near Zurich's main station (47.3769 N, 8.5417 E)
  that went through ``Adobe Photoshop 25.0``.
- ``no-gps.jpg``: a Fujifilm photo with camera and time (DateTime only) but no position.
- ``no-exif.jpg``: no EXIF at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

from PIL import ExifTags, Image, ImageDraw, TiffImagePlugin

from controlplane.examples import photo

SIZE = (64, 48)
QUALITY = 80

Scene = Callable[[ImageDraw.ImageDraw], None]


@dataclasses.dataclass(frozen=True)
class GpsFix:
    """A position as decimal text, so that it converts exactly to EXIF's rationals."""

    latitude: str
    longitude: str
    altitude_m: int | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample photo: what it shows and what its EXIF says."""

    name: str
    scene: Scene
    make: str | None = None
    model: str | None = None
    software: str | None = None
    taken: str | None = None  # EXIF DateTimeOriginal, "YYYY:MM:DD HH:MM:SS"
    taken_offset: str | None = None  # EXIF OffsetTimeOriginal, "+02:00"
    modified: str | None = None  # EXIF DateTime
    gps: GpsFix | None = None


def _tower(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 63, 47), fill=(135, 190, 235))
    draw.rectangle((0, 40, 63, 47), fill=(70, 140, 60))
    draw.polygon([(32, 4), (22, 40), (42, 40)], fill=(95, 85, 75))
    draw.rectangle((26, 26, 38, 28), fill=(95, 85, 75))


def _lake(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 63, 47), fill=(200, 215, 235))
    draw.polygon([(0, 30), (18, 10), (34, 30)], fill=(240, 240, 245))
    draw.polygon([(26, 30), (46, 6), (63, 30)], fill=(225, 230, 240))
    draw.rectangle((0, 30, 63, 47), fill=(40, 90, 150))


def _sunset(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 63, 47), fill=(250, 170, 90))
    draw.ellipse((22, 18, 42, 38), fill=(255, 230, 120))
    draw.rectangle((0, 34, 63, 47), fill=(60, 50, 70))


def _still_life(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((0, 0, 63, 47), fill=(230, 225, 215))
    draw.ellipse((12, 14, 32, 34), fill=(200, 40, 40))
    draw.rectangle((36, 12, 52, 36), fill=(40, 120, 60))


SAMPLES: tuple[Sample, ...] = (
    Sample(
        name="paris-gps.jpg",
        scene=_tower,
        make="Canon",
        model="EOS 80D",
        taken="2024:06:14 09:30:12",
        taken_offset="+02:00",
        gps=GpsFix("48.8584", "2.2945", altitude_m=35),
    ),
    Sample(
        name="zurich-edited.jpg",
        scene=_lake,
        make="NIKON CORPORATION",
        model="NIKON Z 6",
        software="Adobe Photoshop 25.0",
        taken="2024:07:01 17:45:00",
        modified="2024:07:02 18:05:44",
        gps=GpsFix("47.3769", "8.5417"),
    ),
    Sample(
        name="no-gps.jpg",
        scene=_sunset,
        make="FUJIFILM",
        model="X100V",
        modified="2023:12:24 16:20:00",
    ),
    Sample(name="no-exif.jpg", scene=_still_life),
)


def render(sample: Sample) -> bytes:
    """Draw a sample and encode it as a JPEG with its EXIF.

    Args:
        sample: The sample to draw.

    Returns:
        The JPEG bytes.
    """
    image = Image.new("RGB", SIZE)
    sample.scene(ImageDraw.Draw(image))
    output = io.BytesIO()
    exif = exif_of(sample)
    if exif is None:
        image.save(output, "JPEG", quality=QUALITY)
    else:
        image.save(output, "JPEG", quality=QUALITY, exif=exif)
    return output.getvalue()


def exif_of(sample: Sample) -> Image.Exif | None:
    """The EXIF of a sample, with its GPS in the GPS IFD (0x8825) as real cameras write it.

    Args:
        sample: The sample.

    Returns:
        The EXIF, or None for a sample without any.
    """
    base = {
        ExifTags.Base.Make: sample.make,
        ExifTags.Base.Model: sample.model,
        ExifTags.Base.Software: sample.software,
        ExifTags.Base.DateTime: sample.modified,
    }
    details = {
        ExifTags.Base.DateTimeOriginal: sample.taken,
        ExifTags.Base.OffsetTimeOriginal: sample.taken_offset,
    }
    if not any((*base.values(), *details.values(), sample.gps)):
        return None
    exif = Image.Exif()
    exif.update({tag: value for tag, value in base.items() if value is not None})
    exif_ifd = exif.get_ifd(ExifTags.IFD.Exif)
    exif_ifd.update({tag: value for tag, value in details.items() if value is not None})
    if sample.gps is not None:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(_gps_tags(sample.gps))
    return exif


def _gps_tags(fix: GpsFix) -> dict[int, object]:
    latitude, longitude = Fraction(fix.latitude), Fraction(fix.longitude)
    tags: dict[int, object] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        ExifTags.GPS.GPSLatitude: _dms(abs(latitude)),
        ExifTags.GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        ExifTags.GPS.GPSLongitude: _dms(abs(longitude)),
    }
    if fix.altitude_m is not None:
        tags[ExifTags.GPS.GPSAltitudeRef] = b"\x00" if fix.altitude_m >= 0 else b"\x01"
        tags[ExifTags.GPS.GPSAltitude] = TiffImagePlugin.IFDRational(abs(fix.altitude_m), 1)
    return tags


def _dms(degrees: Fraction) -> tuple[TiffImagePlugin.IFDRational, ...]:
    # Whole degrees, whole minutes, and the exact rest as rational seconds.
    whole_degrees = math.floor(degrees)
    minutes = (degrees - whole_degrees) * 60
    whole_minutes = math.floor(minutes)
    seconds = (minutes - whole_minutes) * 60
    return (
        TiffImagePlugin.IFDRational(whole_degrees, 1),
        TiffImagePlugin.IFDRational(whole_minutes, 1),
        TiffImagePlugin.IFDRational(seconds.numerator, seconds.denominator),
    )


def write_samples(directory: Path) -> list[Path]:
    """Write every sample into a folder.

    Args:
        directory: Where to write; created if missing.

    Returns:
        The written files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in SAMPLES:
        path = directory / sample.name
        path.write_bytes(render(sample))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Write the samples (by default into the package's samples folder) and list them.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` if None.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=photo.SAMPLES_DIR, help="output folder")
    arguments = parser.parse_args(argv)
    for path in write_samples(arguments.out):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
