"""The kopf side of the operator: its handlers, its settings, and ``controlplane operator``.

The handlers live on a registry built by :func:`build_registry` (not kopf's global default
one), with the reconciler passed in, so nothing here is module state and a test can build as
many operators as it likes. Every event of a ``Sequence`` (create, update, resume after a
restart, delete) runs the same reconciliation; see :mod:`.reconcile` for why that is safe.

Settings chosen for one replica: ``standalone`` (no peering objects to coordinate replicas),
no scanning of namespaces and CRDs when the namespaces are given by name (kopf then needs no
cluster-wide permissions; the CRD must exist when the operator starts, which Helm's ``crds/``
ensures),
kopf's own bookkeeping in annotations under ``kopf.controlplane.dev/`` (a CRD's status schema
would prune kopf's status fields), the finalizer ``controlplane.dev/shipyard`` (a Sequence
leaves its project's shipyard before it goes), and the operator's last-valid-spec annotation
left out of kopf's diff, so writing it does not count as a change to handle.

A control plane that cannot be reached (or refuses a call) makes the handler raise
:class:`kopf.TemporaryError` with a doubling delay (1 s up to 30 s): kopf keeps the event and
tries again, and a deletion waits, finalizer in place, until the project is updated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import kopf

from controlplane.adapters.kubernetes import api, cluster
from controlplane.adapters.kubernetes.assembly import LAST_VALID_ANNOTATION
from controlplane.adapters.kubernetes.reconcile import Reconciler

FINALIZER = "controlplane.dev/shipyard"
KOPF_PREFIX = "kopf.controlplane.dev"
LIVENESS_PATH = "/healthz"
RETRY_FIRST = 1.0
RETRY_LONGEST = 30.0


def retry_delay(retry: int) -> float:
    """Seconds before attempt ``retry + 1``: 1, 2, 4, ... up to 30."""
    return min(RETRY_FIRST * 2.0 ** min(retry, 16), RETRY_LONGEST)


def parse_namespaces(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; empty means every namespace."""
    return [name.strip() for name in text.split(",") if name.strip()]


def build_registry(reconciler: Reconciler, login: cluster.ClusterLogin) -> kopf.OperatorRegistry:
    """Handlers for every Sequence event, all running ``reconciler``; ``login`` logs kopf in."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def log_in(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return login.login(**kwargs)

    reconcile = sequence_handler(reconciler)
    resource = (cluster.GROUP, cluster.VERSION, cluster.PLURAL)
    kopf.on.create(*resource, id="create", registry=registry)(reconcile)
    kopf.on.update(*resource, id="update", registry=registry)(reconcile)
    kopf.on.resume(*resource, id="resume", registry=registry)(reconcile)
    kopf.on.delete(*resource, id="delete", registry=registry)(reconcile)
    return registry


def sequence_handler(reconciler: Reconciler) -> Callable[..., Awaitable[None]]:
    """The one handler for every Sequence event; failures become kopf retries with backoff."""

    async def reconcile(body: Mapping[str, Any], retry: int, **_: Any) -> None:
        try:
            await reconciler.reconcile(body)
        except (api.ControlPlaneUnavailable, cluster.KubernetesApiError) as exc:
            raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from exc

    return reconcile


def operator_settings(*, namespaced: bool) -> kopf.OperatorSettings:
    """Settings for one replica; ``namespaced``: the operator watches a list of exact names."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    # With exact namespace names there is nothing to discover: no cluster-wide list and watch
    # of namespaces and CRDs, and so no cluster-wide permissions for a namespaced operator.
    settings.scanning.disabled = namespaced
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX,
        ignored_fields=[("metadata", "annotations", LAST_VALID_ANNOTATION)],
    )
    return settings


async def run(
    *,
    api_url: str,
    api_token: str | None,
    namespaces: Sequence[str],
    liveness_port: int | None,
) -> int:
    """Run the operator until SIGINT or SIGTERM.

    Args:
        api_url: the control plane's HTTP API.
        api_token: sent as ``x-token`` when set.
        namespaces: watch only these (exact names); empty watches the whole cluster.
        liveness_port: serve kopf's liveness probe on ``0.0.0.0:<port>/healthz``; None: off.
    """
    login = cluster.ClusterLogin()
    sequences = cluster.SequencesApi(login, namespaces)
    async with api.connect(api_url, api_token) as http:
        try:
            reconciler = Reconciler(api.ControlPlaneProjects(http), sequences)
            await kopf.operator(
                registry=build_registry(reconciler, login),
                settings=operator_settings(namespaced=bool(namespaces)),
                standalone=True,
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                liveness_endpoint=(
                    f"http://0.0.0.0:{liveness_port}{LIVENESS_PATH}" if liveness_port else None
                ),
            )
        finally:
            await sequences.aclose()
    return 0
