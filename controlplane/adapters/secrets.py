"""Named credentials from the environment or from a directory of files.

SLI configurations never hold credentials; they name them (``auth: {type: bearer, secret:
PROM_TOKEN}``) and :class:`EnvironmentSecrets` resolves the name when a source is queried:

1. the environment variable ``CONTROLPLANE_SECRET_<NAME>``, the name uppercased with ``-``
   and ``.`` turned into ``_`` (``prom-token`` -> ``CONTROLPLANE_SECRET_PROM_TOKEN``);
2. the file ``<directory>/<name>``, which is how a Kubernetes Secret mounted as a volume
   appears (one file per key); one trailing newline, as editors leave it, is dropped.

Names are simple (letters, digits, ``-``, ``_``, ``.``) so that a name can never reach
outside the directory. A missing secret is ``None``; an unreadable file is an error, since
a mount that exists but cannot be read is a deployment mistake worth hearing about.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PREFIX", "EnvironmentSecrets"]

PREFIX = "CONTROLPLANE_SECRET_"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class EnvironmentSecrets:
    """The ``Secrets`` port: environment variables first, then files in ``directory``."""

    def __init__(
        self,
        *,
        prefix: str = PREFIX,
        directory: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._prefix = prefix
        self._directory = directory
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str | None:
        """The secret called ``name``, or None when neither place has it.

        Raises:
            ValueError: ``name`` is not a simple name.
            OSError: the secret's file exists but cannot be read.
        """
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"secret names are letters, digits, '-', '_' and '.': {name!r}")
        value = self._environ.get(self.variable(name))
        if value is not None:
            return value
        if self._directory is None:
            return None
        return _read(self._directory / name)

    def variable(self, name: str) -> str:
        """The environment variable that holds the secret ``name``."""
        return self._prefix + name.upper().replace("-", "_").replace(".", "_")


def _read(file: Path) -> str | None:
    try:
        text = file.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")
