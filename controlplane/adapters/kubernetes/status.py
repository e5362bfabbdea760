"""The ``status`` a Sequence shows: where it runs, in which shipyard version, and why not.

One condition, ``Ready``, in the usual Kubernetes shape. Its ``lastTransitionTime`` moves only
when ``status`` flips between True and False, so a status written again with the same outcome
is byte-for-byte the same and the operator can skip the write (no churn on restarts).

Reasons:

- ``Reconciled`` (True): the current spec is in the project's shipyard.
- ``Invalid`` (False): the current spec is wrong; the message has validate's words, and the
  project keeps the resource's last valid spec, if there is one.
- ``ControlPlaneUnavailable`` (False): the control plane could not be reached or refused the
  call; the operator retries with backoff.
- ``ProjectNotManaged`` (False): the project exists but was not written by the operator (it
  comes from a file or from the API), so the operator leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

READY = "Ready"


class Reason(StrEnum):
    RECONCILED = "Reconciled"
    INVALID = "Invalid"
    CONTROL_PLANE_UNAVAILABLE = "ControlPlaneUnavailable"
    PROJECT_NOT_MANAGED = "ProjectNotManaged"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconciliation says about one resource."""

    ready: bool
    reason: Reason
    message: str
    project: str  # the project whose shipyard holds the resource's sequence; "" for none
    shipyard_version: int | None  # that project's shipyard revision


def build_status(
    previous: Mapping[str, Any], outcome: Outcome, *, generation: int | None, now: str
) -> dict[str, Any]:
    """The full status stanza; keys to drop are None (a JSON merge patch removes them)."""
    flag = "True" if outcome.ready else "False"
    transition = now
    for condition in previous.get("conditions") or ():
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == READY
            and condition.get("status") == flag
            and condition.get("lastTransitionTime")
        ):
            transition = condition["lastTransitionTime"]
    ready: dict[str, Any] = {
        "type": READY,
        "status": flag,
        "reason": str(outcome.reason),
        "message": outcome.message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        ready["observedGeneration"] = generation
    return {
        "observedGeneration": generation,
        "shipyardVersion": outcome.shipyard_version,
        "project": outcome.project or None,
        "conditions": [ready],
    }


def needs_update(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether writing ``status`` over ``previous`` would change anything."""
    for key, value in status.items():
        if value is None:
            if previous.get(key) is not None:
                return True
        elif previous.get(key) != value:
            return True
    return False
