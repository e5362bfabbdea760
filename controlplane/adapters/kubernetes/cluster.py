"""The few Kubernetes calls the operator makes itself: list Sequences, patch their status.

kopf watches the resources and calls the handlers, but a handler for one Sequence must read
all Sequences of its project and write the status of each, which kopf has no public call for.
Rather than bring in a whole Kubernetes client library, these three requests go over httpx,
with the very credentials kopf logged in with: :class:`ClusterLogin` is kopf's login handler
(the pod's service account, else the kubeconfig, as kopf itself would do) and keeps what it
returned for :class:`SequencesApi`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import kopf

logger = logging.getLogger(__name__)

GROUP = "controlplane.dev"
VERSION = "v1alpha1"
PLURAL = "sequences"
_MERGE_PATCH = {"content-type": "application/merge-patch+json"}


class KubernetesApiError(Exception):
    """The Kubernetes API could not be reached, or it refused a call."""


class ClusterLogin:
    """kopf's login handler, remembering the credentials for the operator's own calls."""

    def __init__(self) -> None:
        self.connection: kopf.ConnectionInfo | None = None

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        """Log in with the service account in a pod, or else with the kubeconfig."""
        connection = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        if connection is None:
            logger.error(
                "operator.no_credentials",
                extra={
                    "reason": "no service account token (not in a pod) and no kubeconfig"
                    " (KUBECONFIG or ~/.kube/config)"
                },
            )
        self.connection = connection
        return connection


class SequencesApi:
    """List Sequences of the watched namespaces and patch one Sequence's status or annotations.

    Args:
        login: where the current credentials are (they change when kopf logs in again).
        namespaces: the watched namespaces; empty means all of them.
    """

    def __init__(
        self, login: ClusterLogin, namespaces: Sequence[str], *, timeout: float = 10.0
    ) -> None:
        self._login = login
        self._namespaces = list(namespaces)
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._client_for: kopf.ConnectionInfo | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def list_sequences(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        everywhere: list[str | None] = [None]
        for namespace in self._namespaces or everywhere:
            response = await self._call("GET", _path(namespace))
            items.extend(response.json().get("items") or [])
        return items

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._call("PATCH", f"{_path(namespace, name)}/status", {"status": dict(status)})

    async def patch_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        await self._call("PATCH", _path(namespace, name), body)

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        client = await self._current_client()
        try:
            response = await client.request(
                method, path, json=body, headers=_MERGE_PATCH if body is not None else None
            )
        except httpx.HTTPError as exc:
            raise KubernetesApiError(
                f"cannot reach the Kubernetes API at {client.base_url}: {exc or type(exc).__name__}"
            ) from exc
        if response.is_success or (method == "PATCH" and response.status_code == 404):
            return response  # a resource deleted meanwhile needs no status
        raise KubernetesApiError(
            f"the Kubernetes API answered {response.status_code} to {method} {path}:"
            f" {_message(response)}"
        )

    async def _current_client(self) -> httpx.AsyncClient:
        connection = self._login.connection
        if connection is None:
            raise KubernetesApiError("not logged in to the Kubernetes API yet")
        if self._client is None or self._client_for is not connection:
            await self.aclose()
            self._client = _client(connection, self._timeout)
            self._client_for = connection
        return self._client


def _client(connection: kopf.ConnectionInfo, timeout: float) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if connection.server.startswith("https:"):
        verify = connection.as_ssl_context()
    return httpx.AsyncClient(
        base_url=connection.server,
        headers=connection.as_http_headers(),
        verify=verify,
        timeout=timeout,
        trust_env=connection.trust_env,
    )


def _path(namespace: str | None, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{PLURAL}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:300]
