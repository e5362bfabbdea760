from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.adapters.secrets import EnvironmentSecrets
from controlplane.application.ports import Secrets


def test_the_environment_comes_first() -> None:
    secrets = EnvironmentSecrets(environ={"CONTROLPLANE_SECRET_PROM_TOKEN": "s3cret"})
    assert secrets.get("PROM_TOKEN") == "s3cret"
    assert secrets.get("prom-token") == "s3cret"
    assert secrets.get("prom.token") == "s3cret"
    assert secrets.get("other") is None


def test_variable_names() -> None:
    secrets = EnvironmentSecrets(prefix="X_", environ={})
    assert secrets.variable("stock.api-key") == "X_STOCK_API_KEY"


def test_an_empty_variable_is_still_a_value() -> None:
    assert EnvironmentSecrets(environ={"CONTROLPLANE_SECRET_EMPTY": ""}).get("EMPTY") == ""


def test_files_as_a_mounted_kubernetes_secret(tmp_path: Path) -> None:
    (tmp_path / "stock-token").write_text("from-file\n")
    (tmp_path / "crlf").write_bytes(b"windows\r\n")
    (tmp_path / "two-lines").write_text("a\n\n")
    (tmp_path / "raw").write_text("no newline")
    secrets = EnvironmentSecrets(directory=tmp_path, environ={})
    assert secrets.get("stock-token") == "from-file"
    assert secrets.get("crlf") == "windows"
    assert secrets.get("two-lines") == "a\n"
    assert secrets.get("raw") == "no newline"
    assert secrets.get("absent") is None


def test_the_environment_wins_over_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file")
    secrets = EnvironmentSecrets(directory=tmp_path, environ={"CONTROLPLANE_SECRET_TOKEN": "env"})
    assert secrets.get("token") == "env"


def test_directories_are_not_secrets(tmp_path: Path) -> None:
    # A Kubernetes secret volume holds '..data' style directories next to the keys.
    (tmp_path / "..data").mkdir()
    (tmp_path / "nested").mkdir()
    secrets = EnvironmentSecrets(directory=tmp_path, environ={})
    assert secrets.get("..data") is None
    assert secrets.get("nested") is None


def test_a_missing_directory_means_no_secrets(tmp_path: Path) -> None:
    secrets = EnvironmentSecrets(directory=tmp_path / "absent", environ={})
    assert secrets.get("token") is None


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", "/etc/passwd", ".", "..", "a b"])
def test_names_must_be_simple(tmp_path: Path, name: str) -> None:
    secrets = EnvironmentSecrets(directory=tmp_path, environ={})
    with pytest.raises(ValueError, match="secret names"):
        secrets.get(name)


def test_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLPLANE_SECRET_FROM_PROCESS", "yes")
    assert EnvironmentSecrets().get("from-process") == "yes"


def test_it_implements_the_port() -> None:
    secrets: Secrets = EnvironmentSecrets(environ={})
    assert secrets.get("x") is None
