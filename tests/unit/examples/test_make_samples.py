"""The sample generator: deterministic, small, and the committed samples are its output."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from controlplane.examples import make_samples, photo


def test_rendering_is_deterministic() -> None:
    for sample in make_samples.SAMPLES:
        assert make_samples.render(sample) == make_samples.render(sample)


def test_every_sample_is_committed_and_small() -> None:
    for sample in make_samples.SAMPLES:
        content = (photo.SAMPLES_DIR / sample.name).read_bytes()
        assert content.startswith(b"\xff\xd8")  # a JPEG
        assert len(base64.b64encode(content)) < 16 * 1024  # a fraction of a 64 KiB event


def test_the_samples_cover_gps_editing_and_no_exif() -> None:
    by_name = {sample.name: sample for sample in make_samples.SAMPLES}

    assert by_name["paris-gps.jpg"].gps is not None
    assert by_name["paris-gps.jpg"].software is None
    assert by_name["zurich-edited.jpg"].software == "Adobe Photoshop 25.0"
    assert make_samples.exif_of(by_name["no-exif.jpg"]) is None


def test_main_writes_every_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert make_samples.main(["--out", str(tmp_path / "out")]) == 0

    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(sample.name for sample in make_samples.SAMPLES)
    assert "paris-gps.jpg" in capsys.readouterr().out
