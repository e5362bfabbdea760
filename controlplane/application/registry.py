"""The integration registry (Keptn's "uniform"): who serves which events, and where to push.

All integrations are held in memory (there are few) and written through to the store, so
the webhook dispatcher can match every ``.triggered`` event against the subscriptions
without a query. Pings only move ``last_seen``; to keep them from costing a database commit
each, the registry persists a newer ``last_seen`` at most every ``persist_every`` seconds
per integration. After a restart an integration may therefore look up to that much older,
which only matters if it is that close to expiring.

Registrations that stop pinging for ``ttl`` seconds expire (unless they were registered with
``expires: false``): :meth:`Registry.expire` removes them, and until it runs they are
already invisible to the API and to webhook matching.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from controlplane.application.envelope import format_time
from controlplane.application.errors import NotFound, Rejected
from controlplane.application.ports import IntegrationStore
from controlplane.domain import integrations
from controlplane.domain.integrations import Integration, InvalidIntegration, Subscription

logger = logging.getLogger(__name__)


class Registry:
    def __init__(
        self,
        store: IntegrationStore,
        *,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._new_id = new_id
        self._persist_every = min(30.0, ttl / 4)
        self._integrations: dict[str, Integration] = {}
        self._persisted_seen: dict[str, float] = {}
        self._write_lock = asyncio.Lock()

    @property
    def ttl(self) -> float:
        return self._ttl

    async def load(self) -> None:
        loaded = await self._store.load_integrations()
        self._integrations = {integration.id: integration for integration in loaded}
        self._persisted_seen = {integration.id: integration.last_seen for integration in loaded}

    # ------------------------------------------------------------------------- reading

    def search(
        self,
        *,
        id: str = "",
        name: str = "",
        project: str = "",
        stage: str = "",
        service: str = "",
    ) -> list[Integration]:
        """Live integrations, oldest name first; each given argument narrows the list."""
        now = self._clock()
        found = [
            integration
            for integration in self._integrations.values()
            if not integration.expired(now, self._ttl)
            and (not id or integration.id == id)
            and (not name or integration.name == name)
            and (
                not (project or stage or service)
                or integration.admits_scope(project, stage, service)
            )
        ]
        return sorted(found, key=lambda integration: (integration.name, integration.id))

    def get(self, integration_id: str) -> Integration:
        integration = self._integrations.get(integration_id)
        if integration is None or integration.expired(self._clock(), self._ttl):
            raise NotFound(
                f"integration {integration_id!r} is not registered"
                " (it may have expired after not pinging: register again)"
            )
        return integration

    def subscription(self, integration_id: str, subscription_id: str) -> Subscription:
        found = self.get(integration_id).subscription(subscription_id)
        if found is None:
            raise NotFound(
                f"integration {integration_id!r} has no subscription {subscription_id!r}"
            )
        return found

    def webhook_targets(
        self, event_type: str, project: str, stage: str, service: str
    ) -> list[tuple[Integration, Subscription]]:
        """The webhook subscriptions of live integrations that want this event."""
        now = self._clock()
        return [
            (integration, subscription)
            for integration in self._integrations.values()
            if not integration.expired(now, self._ttl)
            for subscription in integration.subscriptions
            if subscription.webhook is not None
            and subscription.matches(event_type, project, stage, service)
        ]

    def find_subscription(self, subscription_id: str) -> tuple[Integration, Subscription] | None:
        """A live subscription by id, wherever it is registered."""
        now = self._clock()
        for integration in self._integrations.values():
            if integration.expired(now, self._ttl):
                continue
            found = integration.subscription(subscription_id)
            if found is not None:
                return integration, found
        return None

    # ------------------------------------------------------------------------- writing

    async def register(self, body: object) -> tuple[str, bool]:
        """Register a service; returns its id and whether it is new.

        A known id (same name, namespace and host) keeps its subscriptions: Keptn's rule,
        so edits made through the API survive the service's restart.
        """
        try:
            name, metadata, raw_subscriptions, expires = integrations.parse_registration(body)
            integration_id = integrations.integration_id(
                name, metadata.namespace, metadata.hostname
            )
            subscriptions = tuple(
                integrations.parse_subscription(raw, self._new_id(), path=f"subscriptions[{index}]")
                for index, raw in enumerate(raw_subscriptions)
            )
        except InvalidIntegration as exc:
            raise Rejected(f"invalid integration: {exc}") from exc
        async with self._write_lock:
            now = self._clock()
            existing = self._integrations.get(integration_id)
            created = existing is None or existing.expired(now, self._ttl)
            if existing is not None and not created:
                subscriptions = _refresh_webhooks(existing.subscriptions, subscriptions)
            integration = Integration(
                id=integration_id,
                name=name,
                metadata=metadata,
                subscriptions=subscriptions,
                last_seen=now,
                expires=expires,
            )
            await self._save(integration)
        logger.info(
            "registry.registered" if created else "registry.reregistered",
            extra={"integration": integration_id, "integration_name": name},
        )
        return integration_id, created

    async def ping(self, integration_id: str) -> Integration:
        integration = self.get(integration_id)
        now = self._clock()
        integration = integration.evolve(last_seen=now)
        self._integrations[integration_id] = integration
        if now - self._persisted_seen.get(integration_id, 0.0) >= self._persist_every:
            self._persisted_seen[integration_id] = now
            await self._store.save_last_seen({integration_id: now})
        return integration

    async def unregister(self, integration_id: str) -> None:
        async with self._write_lock:
            self.get(integration_id)
            await self._store.delete_integrations([integration_id])
            self._forget(integration_id)
        logger.info("registry.unregistered", extra={"integration": integration_id})

    async def add_subscription(self, integration_id: str, body: object) -> str:
        subscription = self._parse_subscription(body, self._new_id())
        async with self._write_lock:
            integration = self.get(integration_id)
            await self._save(
                integration.evolve(subscriptions=(*integration.subscriptions, subscription))
            )
        return subscription.id

    async def replace_subscription(
        self, integration_id: str, subscription_id: str, body: object
    ) -> None:
        subscription = self._parse_subscription(body, subscription_id)
        async with self._write_lock:
            self.subscription(integration_id, subscription_id)
            integration = self.get(integration_id)
            replaced = tuple(
                subscription if existing.id == subscription_id else existing
                for existing in integration.subscriptions
            )
            await self._save(integration.evolve(subscriptions=replaced))

    async def delete_subscription(self, integration_id: str, subscription_id: str) -> None:
        async with self._write_lock:
            self.subscription(integration_id, subscription_id)
            integration = self.get(integration_id)
            kept = tuple(s for s in integration.subscriptions if s.id != subscription_id)
            await self._save(integration.evolve(subscriptions=kept))

    async def expire(self) -> list[str]:
        """Delete the registrations that stopped pinging; returns their ids."""
        async with self._write_lock:
            now = self._clock()
            gone = [
                integration.id
                for integration in self._integrations.values()
                if integration.expired(now, self._ttl)
            ]
            if gone:
                await self._store.delete_integrations(gone)
                for integration_id in gone:
                    self._forget(integration_id)
        for integration_id in gone:
            logger.info("registry.expired", extra={"integration": integration_id})
        return gone

    async def run_expiry(self, stop: asyncio.Event) -> None:
        """Call :meth:`expire` every quarter TTL (at most every 30 s) until ``stop``."""
        interval = min(30.0, max(self._ttl / 4, 0.1))
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                try:
                    await self.expire()
                except Exception:
                    logger.exception("registry.expiry_failed")

    # ------------------------------------------------------------------------- helpers

    def _parse_subscription(self, body: object, subscription_id: str) -> Subscription:
        try:
            return integrations.parse_subscription(body, subscription_id)
        except InvalidIntegration as exc:
            raise Rejected(f"invalid subscription: {exc}") from exc

    async def _save(self, integration: Integration) -> None:
        await self._store.save_integration(integration)
        self._integrations[integration.id] = integration
        self._persisted_seen[integration.id] = integration.last_seen

    def _forget(self, integration_id: str) -> None:
        self._integrations.pop(integration_id, None)
        self._persisted_seen.pop(integration_id, None)


def _refresh_webhooks(
    stored: tuple[Subscription, ...], sent: tuple[Subscription, ...]
) -> tuple[Subscription, ...]:
    """Keep the stored subscriptions, but take the webhook target the service sends now.

    A push service that restarts may listen on a new address or sign with a new secret;
    only it knows them. Its filters and the subscriptions themselves stay as stored.
    """
    targets = {s.event: s.webhook for s in sent if s.webhook is not None}
    return tuple(
        replace(s, webhook=targets[s.event]) if s.webhook is not None and s.event in targets else s
        for s in stored
    )


def integration_json(integration: Integration) -> dict[str, Any]:
    """The API shape of an integration (Keptn's, plus ``expires``); secrets left out."""
    metadata: dict[str, Any] = integration.metadata.to_json()
    metadata["lastseen"] = format_time(integration.last_seen)
    return {
        "id": integration.id,
        "name": integration.name,
        "metadata": metadata,
        "subscriptions": [s.to_json() for s in integration.subscriptions],
        "expires": integration.expires,
    }
