"""Every shipped shipyard in sequences/ parses cleanly: no errors and no warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.adapters.files import YamlShipyardReader, load_directory
from controlplane.domain.shipyard import Shipyard

SEQUENCES = Path(__file__).resolve().parent.parent / "sequences"
FILES = sorted(p for p in SEQUENCES.iterdir() if p.suffix in (".yaml", ".yml"))


def read(name: str) -> Shipyard:
    path = SEQUENCES / name
    return YamlShipyardReader().read(path.read_text(encoding="utf-8"), str(path))


def test_there_are_shipped_sequences() -> None:
    assert "seed.yaml" in {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_parses_without_errors_or_warnings(path: Path) -> None:
    shipyard = read(path.name)
    assert shipyard.warnings == ()
    assert shipyard.stages


def test_directory_loads_every_file() -> None:
    loaded = load_directory(SEQUENCES)
    assert [f.path for f in loaded] == FILES
    assert [(f.project, f.error) for f in loaded] == [(p.stem, None) for p in FILES]


def test_seed_project() -> None:
    shipyard = read("seed.yaml")
    assert [stage.name for stage in shipyard.stages] == ["dev"]
    assert [t.name for t in shipyard.sequence("dev", "sequence-one").tasks] == ["checknumber"]
    assert [t.name for t in shipyard.sequence("dev", "judge-photo").tasks] == [
        "extract-metadata",
        "geolookup",
        "evaluate",
    ]
    # sequence-one is a single task that finishes the run: nothing chains from it.
    assert shipyard.triggered_by("dev", "sequence-one", "pass", "checknumber") == []


def test_delivery_project_chains_dev_staging_production() -> None:
    shipyard = read("delivery.yaml")
    assert [stage.name for stage in shipyard.stages] == ["dev", "staging", "production"]

    def fired(stage: str, sequence: str, result: str, last_task: str) -> list[str]:
        return [
            f"{s.name}.{q.name}"
            for s, q in shipyard.triggered_by(stage, sequence, result, last_task)
        ]

    assert fired("dev", "delivery", "pass", "release") == ["staging.delivery"]
    assert fired("dev", "delivery", "warning", "release") == ["staging.delivery"]
    assert fired("dev", "delivery", "fail", "evaluation") == []
    assert fired("staging", "delivery", "pass", "release") == ["production.delivery"]
    assert fired("staging", "delivery", "fail", "evaluation") == ["staging.rollback"]
    assert fired("production", "delivery", "fail", "approval") == []
    assert fired("production", "delivery", "fail", "deployment") == ["production.rollback"]
    assert fired("production", "delivery", "fail", "release") == ["production.rollback"]
    assert fired("production", "remediation", "fail", "evaluation") == ["production.remediation"]
    production = shipyard.sequence("production", "delivery")
    assert production.tasks[0].name == "approval"
    assert production.tasks[0].properties == {"pass": "automatic", "warning": "manual"}
    assert shipyard.sequence("staging", "delivery").tasks[2].triggered_after == 120.0
