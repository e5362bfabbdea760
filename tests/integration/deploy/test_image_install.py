"""The container image's install step works, without Docker.

The Dockerfile's build stage copies part of the repository to /src and runs one script,
deploy/image-install.sh. This test reads those COPY and RUN lines from the Dockerfile, does the
same in a temporary folder (a copy of the build context, a fresh virtual environment), deletes
the copied sources as the final image does not have them, and checks that what is left is a
working installation: the command, its roles, the package data and the example services.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".*_cache")


def build_stage() -> list[tuple[str, list[str]]]:
    """(instruction, arguments) of the Dockerfile's build stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[tuple[str, list[str]]]] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction, args = words[0].upper(), words[1:]
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    build = [stage for stage in stages if stage[0][1][-2:] == ["AS", "build"]]
    assert len(build) == 1, "the Dockerfile has one stage named build"
    return build[0]


def copy_context(stage: list[tuple[str, list[str]]], workdir: Path) -> None:
    """Do the stage's COPY instructions (sources in the repository) into ``workdir``."""
    for instruction, args in stage:
        if instruction != "COPY":
            continue
        *sources, destination = args
        target = workdir / destination
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=IGNORED)
            elif destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def run(*command: str | Path, cwd: Path) -> str:
    """Run a command outside the repository, so ``python -c`` cannot import its sources."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.timeout(900)
def test_the_image_install_step_gives_a_working_installation(tmp_path: Path) -> None:
    stage = build_stage()
    workdirs = [args[0] for instruction, args in stage if instruction == "WORKDIR"]
    runs = [args for instruction, args in stage if instruction == "RUN"]
    assert workdirs == ["/src"]
    assert runs == [["deploy/image-install.sh", "/opt/venv", "/src"]]

    source, venv = tmp_path / "src", tmp_path / "venv"
    copy_context(stage, source)
    environment = {**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [source / "deploy/image-install.sh", venv, source],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    shutil.rmtree(source)  # the final image has only the virtual environment

    controlplane = venv / "bin" / "controlplane"
    assert run(controlplane, "--version", cwd=tmp_path).strip() == "controlplane 0.1.0"
    usage = run(controlplane, "--help", cwd=tmp_path)
    for role in ("serve", "migrate", "validate", "trigger"):
        assert f"    {role} " in usage
    run(controlplane, "validate", *sorted((ROOT / "sequences").glob("*.yaml")), cwd=tmp_path)

    # Package data: the migrations, the schema and the example images, all from the venv.
    probe = """
import importlib.resources, json
root = importlib.resources.files("controlplane")
print(json.dumps({
    "file": str(root),
    "migrations": sorted(p.name for p in root.joinpath("adapters/postgres/migrations").iterdir()
                         if p.name.endswith(".sql")),
    "schema": root.joinpath("adapters/postgres/schema.sql").is_file(),
    "samples": sorted(p.name for p in root.joinpath("examples/samples").iterdir()
                      if p.name.endswith(".jpg")),
}))
"""
    found = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=tmp_path))
    assert Path(found["file"]).is_relative_to(venv)
    package = ROOT / "controlplane"
    migrations = package / "adapters" / "postgres" / "migrations"
    assert found["migrations"] == sorted(p.name for p in migrations.glob("*.sql"))
    assert found["schema"] is True
    samples = package / "examples" / "samples"
    assert found["samples"] == sorted(p.name for p in samples.glob("*.jpg"))

    # The example services' app (what the chart's examples Deployment runs) imports, with
    # the optional dependencies of the `examples` extra.
    run(
        venv / "bin" / "python",
        "-c",
        "from controlplane.examples.services import app; import phonenumbers, PIL, "
        "reverse_geocoder; assert sorted(app.registrations) == "
        "['checknumber', 'extract-metadata', 'geolookup']",
        cwd=tmp_path,
    )
