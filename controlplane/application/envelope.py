"""The CloudEvent as the application layer sees it: Keptn's envelope, no transport details.

Adapters turn HTTP requests (through the ``cloudevents`` package) and NATS messages (a
structured JSON body) into an :class:`Envelope`; the event store keeps ``to_json()``, which is
also what goes out on NATS and what the HTTP API returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

SPEC_VERSION = "1.0"
KEPTN_SPEC_VERSION = "0.2.4"
# Keptn's string form for times: millisecond precision, UTC, a literal Z.
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"

KNOWN_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "contenttype",
    "shkeptncontext",
    "triggeredid",
    "gitcommitid",
    "shkeptnspecversion",
    "data",
)


def format_time(epoch: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime(_TIME_FORMAT)
    return stamp[:-3] + "Z"


def parse_time(text: str) -> float:
    """Read Keptn's time strings and RFC 3339; raises ValueError for anything else."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    source: str
    type: str
    time: str
    data: Mapping[str, Any]
    keptn_context: str = ""
    triggered_id: str = ""
    gitcommitid: str = ""
    keptn_spec_version: str = KEPTN_SPEC_VERSION
    datacontenttype: str = "application/json"
    # Extension attributes we do not interpret, kept so nothing a client sent is lost.
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def project(self) -> str:
        return str(self.data.get("project") or "")

    @property
    def stage(self) -> str:
        return str(self.data.get("stage") or "")

    @property
    def service(self) -> str:
        return str(self.data.get("service") or "")

    def evolve(self, **changes: Any) -> Envelope:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "shkeptncontext": self.keptn_context,
            "shkeptnspecversion": self.keptn_spec_version,
        }
        if self.triggered_id:
            body["triggeredid"] = self.triggered_id
        if self.gitcommitid:
            body["gitcommitid"] = self.gitcommitid
        body.update(self.extensions)
        body["data"] = dict(self.data)
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Envelope:
        """Rebuild an envelope we stored or published ourselves (trusted input)."""
        extensions = {k: v for k, v in body.items() if k not in KNOWN_ATTRIBUTES}
        return cls(
            id=str(body["id"]),
            source=str(body.get("source") or ""),
            type=str(body["type"]),
            time=str(body.get("time") or ""),
            data=dict(body.get("data") or {}),
            keptn_context=str(body.get("shkeptncontext") or ""),
            triggered_id=str(body.get("triggeredid") or ""),
            gitcommitid=str(body.get("gitcommitid") or ""),
            keptn_spec_version=str(body.get("shkeptnspecversion") or KEPTN_SPEC_VERSION),
            datacontenttype=str(
                body.get("datacontenttype") or body.get("contenttype") or "application/json"
            ),
            extensions=extensions,
        )
