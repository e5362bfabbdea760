"""The control plane's project endpoints, as the operator uses them (httpx).

The operator goes through the same HTTP API as every other client (Keptn's project endpoints,
the shipyard base64-encoded YAML), so it needs no database access and can run anywhere the
API is reachable. Every failure, whether the server cannot be reached or answers with an
error, becomes :class:`ControlPlaneUnavailable` carrying the HTTP status and the API's own
message, because the operator's answer is the same for all of them: say so in the status and
try again later.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import yaml

_PROJECTS = "/api/controlPlane/v1/project"


class ControlPlaneUnavailable(Exception):
    """The control plane could not be reached, or it refused a call."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ProjectState:
    """A project as the control plane has it now."""

    name: str
    shipyard_yaml: str
    revision: int

    @property
    def document(self) -> object:
        """The shipyard parsed from YAML; None when it does not parse."""
        try:
            return yaml.safe_load(self.shipyard_yaml)
        except yaml.YAMLError:
            return None


def render_shipyard(document: Mapping[str, Any]) -> str:
    """The YAML text of a shipyard, keys in the order given (readable, and stable)."""
    return yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)


def connect(url: str, token: str | None, *, timeout: float = 10.0) -> httpx.AsyncClient:
    """An httpx client for the control plane at ``url``, sending ``token`` as ``x-token``."""
    headers = {"x-token": token} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)


class ControlPlaneProjects:
    """Read, create, replace and delete projects through the HTTP API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def get_project(self, name: str) -> ProjectState | None:
        response = await self._call("GET", f"{_PROJECTS}/{quote(name, safe='')}", missing_ok=True)
        if response.status_code == 404:
            return None
        body = response.json()
        return ProjectState(
            name=str(body.get("projectName", name)),
            shipyard_yaml=str(body.get("shipyard", "")),
            revision=int(body.get("shipyardRevision", 0)),
        )

    async def create_project(self, name: str, shipyard: Mapping[str, Any]) -> None:
        await self._call("POST", _PROJECTS, json=self._body(name, shipyard))

    async def replace_project(self, name: str, shipyard: Mapping[str, Any]) -> None:
        await self._call("PUT", _PROJECTS, json=self._body(name, shipyard))

    async def delete_project(self, name: str) -> None:
        """Delete the project; one that is already gone is fine."""
        await self._call("DELETE", f"{_PROJECTS}/{quote(name, safe='')}", missing_ok=True)

    @staticmethod
    def _body(name: str, shipyard: Mapping[str, Any]) -> dict[str, str]:
        encoded = base64.b64encode(render_shipyard(shipyard).encode("utf-8")).decode("ascii")
        return {"name": name, "shipyard": encoded}

    async def _call(
        self, method: str, path: str, *, json: Any = None, missing_ok: bool = False
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ControlPlaneUnavailable(
                f"cannot reach the control plane at {self._http.base_url}: {reason}"
            ) from exc
        if response.is_success or (missing_ok and response.status_code == 404):
            return response
        raise ControlPlaneUnavailable(
            f"the control plane answered {response.status_code} to {method} {path}:"
            f" {_message(response)}",
            status=response.status_code,
        )


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:300]
