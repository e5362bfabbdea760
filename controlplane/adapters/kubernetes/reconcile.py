"""One reconciliation: list the Sequences, assemble the shipyards, apply them, report back.

Whatever event started it (a Sequence created, changed, resumed after a restart, or being
deleted), a reconciliation does the same: it reads *all* Sequences of the watched namespaces,
assembles every project's shipyard (:mod:`.assembly`), brings the projects that the event
touches in line with the control plane, and writes the status of every Sequence of those
projects. Doing the whole thing each time is what makes it safe to run more than once, late,
or out of order: the result depends only on the resources as they are now, never on which
event came first, and a shipyard equal to the control plane's is not written again (no new
version on a restart).

The projects an event touches are the ones its resource names now, names in its status
(where it was applied), or named in its last valid spec, so a Sequence moving from project A
to B updates both; plus, to a fixed point, every project of every Sequence sharing one of
those projects, so each status written is about a project this round looked at.

Projects are the operator's only when their shipyard carries its mark
(:data:`~.assembly.MANAGED_BY_LABEL`): it creates projects that do not exist, replaces and
deletes only marked ones, and leaves a project that came from a file or from the API alone
(its Sequences say ``ProjectNotManaged``). When no Sequence is left in a marked project, the
operator deletes the project.

Reconciliations run one at a time (one lock per operator), because two of them would list,
assemble and write the same projects; at this scale a few HTTP calls each is fast enough.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controlplane.adapters.kubernetes import assembly, status
from controlplane.adapters.kubernetes.api import ControlPlaneUnavailable, ProjectState

logger = logging.getLogger(__name__)


class ProjectsApi(Protocol):
    """The control plane's project endpoints (:class:`~.api.ControlPlaneProjects`)."""

    async def get_project(self, name: str) -> ProjectState | None: ...

    async def create_project(self, name: str, shipyard: Mapping[str, Any]) -> None: ...

    async def replace_project(self, name: str, shipyard: Mapping[str, Any]) -> None: ...

    async def delete_project(self, name: str) -> None: ...


class SequencesStore(Protocol):
    """The Kubernetes side (:class:`~.cluster.SequencesApi`)."""

    async def list_sequences(self) -> list[dict[str, Any]]: ...

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def patch_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ProjectResult:
    """How applying one project's shipyard went."""

    revision: int | None = None
    error: str = ""  # the control plane failed us
    not_managed: str = ""  # the project is not the operator's to change


def utc_now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        projects: ProjectsApi,
        sequences: SequencesStore,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._projects = projects
        self._sequences = sequences
        self._clock = clock
        self._lock = asyncio.Lock()

    async def reconcile(self, body: Mapping[str, Any]) -> None:
        """Bring every project ``body``'s Sequence touches in line with all Sequences.

        Raises:
            ControlPlaneUnavailable: a project could not be read or written; the statuses
                already say so, and the caller should try again later.
            KubernetesApiError: the Sequences could not be listed or patched.
        """
        async with self._lock:
            trigger = assembly.SequenceResource.from_body(body)
            listed = [
                assembly.SequenceResource.from_body(item)
                for item in await self._sequences.list_sequences()
            ]
            outcome = assembly.assemble(listed)
            results: dict[str, ProjectResult] = {}
            for project in sorted(self._touched(trigger, listed, outcome)):
                results[project] = await self._apply(project, outcome.shipyards.get(project))
            await self._report(listed, outcome, results)
        failures = sorted({result.error for result in results.values() if result.error})
        if failures:
            raise ControlPlaneUnavailable("; ".join(failures))

    @staticmethod
    def _touched(
        trigger: assembly.SequenceResource,
        listed: list[assembly.SequenceResource],
        outcome: assembly.Assembly,
    ) -> set[str]:
        touched = trigger.projects()
        involved = {resource.key: _involved(resource, outcome) for resource in listed}
        touched |= involved.get(trigger.key, set())
        grown = True
        while grown:
            grown = False
            for projects in involved.values():
                if projects & touched and not projects <= touched:
                    touched |= projects
                    grown = True
        return touched

    async def _apply(self, project: str, shipyard: Mapping[str, Any] | None) -> ProjectResult:
        try:
            current = await self._projects.get_project(project)
            if shipyard is None:
                if current is not None and assembly.managed_by_operator(current.document):
                    await self._projects.delete_project(project)
                    logger.info("operator.project_deleted", extra={"project": project})
                return ProjectResult()
            if current is None:
                await self._projects.create_project(project, shipyard)
                logger.info("operator.project_created", extra={"project": project})
            elif not assembly.managed_by_operator(current.document):
                return ProjectResult(not_managed=_not_managed(project))
            elif current.document != shipyard:
                await self._projects.replace_project(project, shipyard)
                logger.info("operator.project_replaced", extra={"project": project})
            else:
                return ProjectResult(revision=current.revision)
            written = await self._projects.get_project(project)
            return ProjectResult(revision=written.revision if written else None)
        except ControlPlaneUnavailable as exc:
            logger.warning(
                "operator.control_plane_failed", extra={"project": project, "error": exc}
            )
            return ProjectResult(error=str(exc))

    async def _report(
        self,
        listed: list[assembly.SequenceResource],
        outcome: assembly.Assembly,
        results: Mapping[str, ProjectResult],
    ) -> None:
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        for resource in listed:
            if resource.deleting or not _involved(resource, outcome) & results.keys():
                continue
            verdict = outcome.verdicts[resource.key]
            applied = verdict.applied
            result = results.get(applied.project) if applied else None
            if applied is not None and result is None:
                continue  # its project was not looked at this round (the closure prevents it)
            shown = _outcome(resource, verdict, result)
            new_status = status.build_status(
                resource.status, shown, generation=resource.generation, now=now
            )
            if status.needs_update(resource.status, new_status):
                await self._sequences.patch_status(resource.namespace, resource.name, new_status)
            if verdict.valid and applied and result and not (result.error or result.not_managed):
                await self._remember_valid(resource, applied)

    async def _remember_valid(
        self, resource: assembly.SequenceResource, applied: assembly.Declaration
    ) -> None:
        spec = applied.as_spec()
        if resource.last_valid == spec:
            return
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        await self._sequences.patch_annotations(
            resource.namespace, resource.name, {assembly.LAST_VALID_ANNOTATION: text}
        )


def _involved(resource: assembly.SequenceResource, outcome: assembly.Assembly) -> set[str]:
    projects = resource.projects()
    verdict = outcome.verdicts.get(resource.key)
    if verdict is not None and verdict.applied is not None:
        projects.add(verdict.applied.project)
    return projects


def _not_managed(project: str) -> str:
    return (
        f"project {project!r} exists and was not created by the operator (its shipyard has no"
        f" {assembly.MANAGED_BY_LABEL}: {assembly.MANAGED_BY} label); it is left as it is."
        " Delete it, or use another project name"
    )


def _outcome(
    resource: assembly.SequenceResource,
    verdict: assembly.Verdict,
    result: ProjectResult | None,
) -> status.Outcome:
    applied = verdict.applied
    healthy = result is not None and not result.error and not result.not_managed
    project = applied.project if applied is not None and healthy else ""
    revision = result.revision if result is not None and healthy else None
    if not verdict.valid:
        message = "; ".join(verdict.problems)
        if applied is not None:
            message += (
                f" (project {applied.project!r} keeps the last valid version of this Sequence)"
            )
        return status.Outcome(False, status.Reason.INVALID, message, project, revision)
    assert applied is not None, "a valid resource is always applied"
    assert result is not None, "and its project was looked at"
    if result.error:
        previous_version = resource.status.get("shipyardVersion")
        return status.Outcome(
            False,
            status.Reason.CONTROL_PLANE_UNAVAILABLE,
            result.error,
            str(resource.status.get("project") or ""),
            previous_version if isinstance(previous_version, int) else None,
        )
    if result.not_managed:
        return status.Outcome(
            False, status.Reason.PROJECT_NOT_MANAGED, result.not_managed, "", None
        )
    message = (
        f"sequence {applied.sequence!r} of stage {applied.stage!r} is in the shipyard of"
        f" project {applied.project!r}, version {revision}"
    )
    message += "".join(f"; warning: {warning}" for warning in verdict.warnings)
    return status.Outcome(True, status.Reason.RECONCILED, message, project, revision)
