"""Integrations (Keptn's "uniform"): registered task services and their subscriptions.

A task service registers under a name and lists subscriptions: an event type (NATS
wildcards allowed) and a filter on project, stage and service. The control plane uses them
to push webhooks; SDK-based services follow them to decide what they serve. Keptn's rules
kept here: the id is derived from name, namespace and host, so a restarted service keeps
it; a filter that names services must also name stages.

The module parses and checks the JSON shapes the API receives, reporting every problem with
its field path, and answers the matching question. No I/O, no clock: callers pass times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from controlplane.domain import eventtypes
from controlplane.domain.errors import DomainError

WebhookMode = Literal["structured", "binary"]
WEBHOOK_MODES: tuple[WebhookMode, ...] = ("structured", "binary")
MIN_SECRET_LENGTH = 16
_SECRET_PREFIX = "whsec_"


class InvalidIntegration(DomainError):
    """The integration or subscription is invalid."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    """Which scopes a subscription wants; an empty tuple admits any value."""

    projects: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def admits(self, project: str, stage: str, service: str) -> bool:
        return (
            (not self.projects or project in self.projects)
            and (not self.stages or stage in self.stages)
            and (not self.services or service in self.services)
        )

    def to_json(self) -> dict[str, list[str]]:
        return {
            "projects": list(self.projects),
            "stages": list(self.stages),
            "services": list(self.services),
        }


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where and how the control plane pushes matching events (our extension to Keptn)."""

    url: str
    secret: str
    mode: WebhookMode = "structured"

    @property
    def key(self) -> bytes:
        """The HMAC key: Standard Webhooks' ``whsec_<base64>`` decoded, else the UTF-8 bytes."""
        return signing_key(self.secret)

    def to_json(self, *, with_secret: bool = False) -> dict[str, str]:
        body = {"url": self.url, "mode": self.mode}
        if with_secret:
            body["secret"] = self.secret
        return body


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    event: str
    filter: SubscriptionFilter = field(default_factory=SubscriptionFilter)
    webhook: Webhook | None = None

    def matches(self, event_type: str, project: str, stage: str, service: str) -> bool:
        return eventtypes.pattern_matches(self.event, event_type) and self.filter.admits(
            project, stage, service
        )

    def to_json(self, *, with_secret: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "event": self.event, "filter": self.filter.to_json()}
        if self.webhook is not None:
            body["webhook"] = self.webhook.to_json(with_secret=with_secret)
        return body


@dataclass(frozen=True, slots=True)
class Metadata:
    """What a service says about itself; shown by ``controlplane integrations``."""

    hostname: str = ""
    integrationversion: str = ""
    distributorversion: str = ""
    location: str = ""
    namespace: str = ""
    podname: str = ""
    deploymentname: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "integrationversion": self.integrationversion,
            "distributorversion": self.distributorversion,
            "location": self.location,
            "kubernetesmetadata": {
                "namespace": self.namespace,
                "podname": self.podname,
                "deploymentname": self.deploymentname,
            },
        }


@dataclass(frozen=True, slots=True)
class Integration:
    id: str
    name: str
    metadata: Metadata = field(default_factory=Metadata)
    subscriptions: tuple[Subscription, ...] = ()
    last_seen: float = 0.0
    expires: bool = True

    def expired(self, now: float, ttl: float) -> bool:
        return self.expires and now - self.last_seen > ttl

    def subscription(self, subscription_id: str) -> Subscription | None:
        return next((s for s in self.subscriptions if s.id == subscription_id), None)

    def evolve(self, **changes: Any) -> Integration:
        return replace(self, **changes)

    def admits_scope(self, project: str, stage: str, service: str) -> bool:
        """Keptn's listing filter: some subscription's filter names (or allows) the values."""
        return any(
            (not project or not s.filter.projects or project in s.filter.projects)
            and (not stage or not s.filter.stages or stage in s.filter.stages)
            and (not service or not s.filter.services or service in s.filter.services)
            for s in self.subscriptions
        )


def integration_id(name: str, namespace: str, hostname: str) -> str:
    """Keptn's id: SHA-1 of ``name-namespace-hostname``, so a restart keeps the same id."""
    return hashlib.sha1(f"{name}-{namespace}-{hostname}".encode()).hexdigest()


def signing_key(secret: str) -> bytes:
    if secret.startswith(_SECRET_PREFIX):
        return base64.b64decode(secret[len(_SECRET_PREFIX) :], validate=True)
    return secret.encode()


# ------------------------------------------------------------------------------ parsing


class _Problems:
    """Collects every problem of a body, each with its field path."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.found.append(f"{path}: {message}" if path else message)

    def raise_if_any(self) -> None:
        if self.found:
            raise InvalidIntegration(self.found)


def parse_registration(body: object) -> tuple[str, Metadata, list[dict[str, Any]], bool]:
    """Check a registration body; return name, metadata, raw subscriptions and ``expires``.

    The subscriptions are returned raw so the caller can give them ids and parse each with
    :func:`parse_subscription` (which reports its own paths under ``subscriptions[i]``).

    Raises:
        InvalidIntegration: with every problem found.
    """
    problems = _Problems()
    if not isinstance(body, Mapping):
        raise InvalidIntegration(["the body must be a JSON object"])
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add("name", "is required (the service's name)")
        name = ""
    elif any(char.isspace() or char in "*>" for char in name):
        problems.add("name", f"{name!r} may not contain whitespace, '*' or '>'")
    metadata = _metadata(body.get("metadata"), problems)
    raw_subscriptions = body.get("subscriptions")
    if raw_subscriptions is None:
        raw_subscriptions = []
    subscriptions: list[dict[str, Any]] = []
    if not isinstance(raw_subscriptions, list):
        problems.add("subscriptions", "must be a list")
    else:
        for index, item in enumerate(raw_subscriptions):
            if not isinstance(item, Mapping):
                problems.add(f"subscriptions[{index}]", "must be an object")
            else:
                subscriptions.append(dict(item))
    expires = body.get("expires", True)
    if not isinstance(expires, bool):
        problems.add("expires", "must be true or false")
        expires = True
    problems.raise_if_any()
    return name, metadata, subscriptions, expires


def _metadata(raw: object, problems: _Problems) -> Metadata:
    if raw is None:
        return Metadata()
    if not isinstance(raw, Mapping):
        problems.add("metadata", "must be an object")
        return Metadata()
    values: dict[str, str] = {}
    for key in ("hostname", "integrationversion", "distributorversion", "location"):
        values[key] = _text(raw.get(key), f"metadata.{key}", problems)
    kubernetes = raw.get("kubernetesmetadata") or {}
    if not isinstance(kubernetes, Mapping):
        problems.add("metadata.kubernetesmetadata", "must be an object")
        kubernetes = {}
    for key in ("namespace", "podname", "deploymentname"):
        values[key] = _text(kubernetes.get(key), f"metadata.kubernetesmetadata.{key}", problems)
    return Metadata(**values)


def _text(value: object, path: str, problems: _Problems) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(path, "must be a string")
        return ""
    return value


def parse_subscription(body: object, subscription_id: str, *, path: str = "") -> Subscription:
    """Check one subscription body and build it under the given id.

    Raises:
        InvalidIntegration: with every problem found, paths prefixed with ``path``.
    """
    if not isinstance(body, Mapping):
        raise InvalidIntegration([f"{path}: must be an object" if path else "must be an object"])
    problems = _Problems()
    prefix = f"{path}." if path else ""
    event = body.get("event")
    pattern = ""
    if not isinstance(event, str) or not event.strip():
        problems.add(f"{prefix}event", "is required (an event type such as checknumber.triggered)")
    else:
        try:
            pattern = eventtypes.check_pattern(event)
        except eventtypes.PatternError as exc:
            problems.add(f"{prefix}event", str(exc))
    subscription_filter = _filter(body.get("filter"), f"{prefix}filter", problems)
    webhook = None
    if body.get("webhook") is not None:
        webhook = _webhook(body["webhook"], f"{prefix}webhook", problems)
        if pattern and not eventtypes.is_triggered_pattern(pattern):
            problems.add(
                f"{prefix}event",
                f"{pattern!r}: only .triggered event types can be pushed to a webhook"
                " (use a concrete type or one '*' segment, ending in .triggered)",
            )
    problems.raise_if_any()
    return Subscription(subscription_id, pattern, subscription_filter, webhook)


def _filter(raw: object, path: str, problems: _Problems) -> SubscriptionFilter:
    if raw is None:
        return SubscriptionFilter()
    if not isinstance(raw, Mapping):
        problems.add(path, "must be an object with projects, stages and services lists")
        return SubscriptionFilter()
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("projects", "stages", "services"):
        value = raw.get(key)
        if value is None:
            lists[key] = ()
        elif not isinstance(value, list) or not all(
            isinstance(item, str) and item for item in value
        ):
            problems.add(f"{path}.{key}", "must be a list of non-empty names")
            lists[key] = ()
        else:
            lists[key] = tuple(dict.fromkeys(value))
    if lists["services"] and not lists["stages"]:
        problems.add(
            f"{path}.services", "a filter on services must also name its stages (Keptn's rule)"
        )
    return SubscriptionFilter(lists["projects"], lists["stages"], lists["services"])


def _webhook(raw: object, path: str, problems: _Problems) -> Webhook | None:
    if not isinstance(raw, Mapping):
        problems.add(path, "must be an object with url, mode and secret")
        return None
    url = raw.get("url")
    try:
        parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    except ValueError:  # e.g. "http://[::1": an unbalanced IPv6 bracket
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        problems.add(f"{path}.url", "must be an http:// or https:// URL with a host")
    mode = raw.get("mode", "structured")
    if mode not in WEBHOOK_MODES:
        problems.add(f"{path}.mode", f"must be 'structured' or 'binary', not {mode!r}")
    secret = raw.get("secret")
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
        problems.add(
            f"{path}.secret",
            f"is required: at least {MIN_SECRET_LENGTH} characters, used to sign each delivery",
        )
    else:
        try:
            signing_key(secret)
        except (binascii.Error, ValueError):
            problems.add(f"{path}.secret", "a secret starting with whsec_ must continue in base64")
    if problems.found:
        return None
    assert isinstance(url, str)
    assert isinstance(secret, str)
    return Webhook(url=url, secret=secret, mode="binary" if mode == "binary" else "structured")


# ------------------------------------------------------------------------------ storage form


def to_document(integration: Integration) -> dict[str, Any]:
    """The JSON the store keeps, secrets included (never sent to API clients)."""
    return {
        "id": integration.id,
        "name": integration.name,
        "metadata": integration.metadata.to_json(),
        "subscriptions": [s.to_json(with_secret=True) for s in integration.subscriptions],
        "expires": integration.expires,
    }


def from_document(doc: Mapping[str, Any], last_seen: float) -> Integration:
    """Rebuild a stored integration (trusted: it was checked when it was stored)."""
    meta = doc.get("metadata") or {}
    kubernetes = meta.get("kubernetesmetadata") or {}
    subscriptions = []
    for raw in doc.get("subscriptions") or []:
        hook = raw.get("webhook")
        subscriptions.append(
            Subscription(
                id=raw["id"],
                event=raw["event"],
                filter=SubscriptionFilter(
                    tuple(raw["filter"].get("projects") or ()),
                    tuple(raw["filter"].get("stages") or ()),
                    tuple(raw["filter"].get("services") or ()),
                ),
                webhook=Webhook(hook["url"], hook["secret"], hook.get("mode", "structured"))
                if hook
                else None,
            )
        )
    return Integration(
        id=doc["id"],
        name=doc["name"],
        metadata=Metadata(
            hostname=meta.get("hostname", ""),
            integrationversion=meta.get("integrationversion", ""),
            distributorversion=meta.get("distributorversion", ""),
            location=meta.get("location", ""),
            namespace=kubernetes.get("namespace", ""),
            podname=kubernetes.get("podname", ""),
            deploymentname=kubernetes.get("deploymentname", ""),
        ),
        subscriptions=tuple(subscriptions),
        last_seen=last_seen,
        expires=bool(doc.get("expires", True)),
    )
