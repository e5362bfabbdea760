"""Registration as a Keptn integration ("uniform"), and following its subscriptions.

In Keptn a task service registers itself with the control plane as an *integration*: a
name, where it runs, and *subscriptions* saying which events it wants (an event type and
project/stage/service filters). Operators then edit those subscriptions through the API,
and the service picks the edits up from the answer to its heartbeat ping. That is what
:class:`Integration` does for a :class:`~tasksdk.app.TaskApp`:

1. On start it registers, with one subscription per handler built from the handler's
   filters, retrying while the API is unreachable.
2. It pings every ``ping_interval`` seconds. The answer carries the current subscriptions,
   which it hands to a listener (the runner) whenever they change. A 404 means the
   registration expired or was deleted: it registers again.
3. Ping failures are logged and retried; the last known subscriptions stay in force, so a
   control plane outage never stops a running service.

It never deletes the registration: like Keptn's distributor it lets it expire by TTL, so a
restart (same name, namespace and hostname, hence the same id) keeps the subscriptions an
operator edited. The price: on such a re-registration (200) the server ignores the
subscriptions sent, so a handler added since then has none; :class:`Integration` warns
about it, naming the task and how to add one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import tasksdk
from tasksdk import api, contract, errors
from tasksdk.transports.base import subject_matches

if TYPE_CHECKING:
    from tasksdk.runner import TaskRegistration

LOCATION_CONTROL_PLANE = "control-plane"
"""``metadata.location`` of a service that receives its events over NATS."""

LOCATION_REMOTE = "remote-execution-plane"
"""``metadata.location`` of a service that receives its events over HTTP (pull or push)."""

WEBHOOK_MODES = ("structured", "binary")
"""How the control plane encodes a pushed event: whole CloudEvent body, or ``ce-*`` headers."""

FAILURES_BEFORE_ALARM = 10
"""Consecutive failed pings after which the failure is logged as an error."""

SubscriptionsListener = Callable[[tuple["Subscription", ...]], Awaitable[None]]
"""Called with the subscriptions that apply to this process whenever they change."""

logger = logging.getLogger("tasksdk.registry")


@dataclasses.dataclass(frozen=True, slots=True)
class Webhook:
    """Where and how the control plane pushes a subscription's events.

    Attributes:
        url: The ``http`` or ``https`` URL the control plane POSTs each event to.
        mode: ``structured`` (the body is the CloudEvent) or ``binary`` (``ce-*`` headers).
        secret: The signing secret; the server never returns it, so None when read back.
    """

    url: str
    mode: str = "structured"
    secret: str | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Render the webhook as the registration API expects it.

        Returns:
            ``url``, ``mode`` and, if known, ``secret``.
        """
        body: dict[str, Any] = {"url": self.url, "mode": self.mode}
        if self.secret is not None:
            body["secret"] = self.secret
        return body


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    """Which events an integration wants: an event type and project/stage/service filters.

    An empty filter tuple admits any value, as in Keptn.

    Attributes:
        event: The event type, possibly with NATS wildcards (``sh.keptn.event.*.triggered``).
        projects: Admitted ``data.project`` values; empty for any.
        stages: Admitted ``data.stage`` values; empty for any.
        services: Admitted ``data.service`` values; empty for any.
        webhook: Where the control plane pushes the events; None for NATS and pull.
        id: The id the server gave the subscription; empty before it is stored.
    """

    event: str
    projects: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    webhook: Webhook | None = None
    id: str = ""

    @classmethod
    def for_task(
        cls,
        task: str,
        *,
        projects: Iterable[str] = (),
        stages: Iterable[str] = (),
        services: Iterable[str] = (),
        webhook: Webhook | None = None,
    ) -> Subscription:
        """Build the subscription to a task's ``.triggered`` events.

        Args:
            task: The task name.
            projects: Admitted projects; empty for any.
            stages: Admitted stages; empty for any.
            services: Admitted services; empty for any.
            webhook: Where to push the events, for HTTP push.

        Returns:
            The subscription.
        """
        return cls(
            event=contract.event_type(task, contract.Phase.TRIGGERED),
            projects=tuple(projects),
            stages=tuple(stages),
            services=tuple(services),
            webhook=webhook,
        )

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Subscription:
        """Read a subscription as the API returns it.

        Args:
            value: A subscription object (``event``, ``filter``, ``webhook``, ``id``).

        Returns:
            The subscription; the short event form ``task.triggered`` is expanded.

        Raises:
            ValueError: If the object has no usable ``event`` or a malformed filter.
        """
        event = value.get("event")
        if not isinstance(event, str) or not event:
            raise ValueError("the subscription has no event type")
        filters = value.get("filter") or {}
        if not isinstance(filters, Mapping):
            raise ValueError("the subscription filter is not an object")
        return cls(
            event=contract.full_event_type(event),
            projects=_names(filters, "projects"),
            stages=_names(filters, "stages"),
            services=_names(filters, "services"),
            webhook=_webhook(value.get("webhook")),
            id=str(value.get("id") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        """Render the subscription for a registration (without its id).

        Returns:
            ``event``, ``filter`` and, for push, ``webhook``.
        """
        body: dict[str, Any] = {
            "event": self.event,
            "filter": {
                "projects": list(self.projects),
                "stages": list(self.stages),
                "services": list(self.services),
            },
        }
        if self.webhook is not None:
            body["webhook"] = self.webhook.to_json()
        return body

    def covers(self, event_type: str) -> bool:
        """Tell whether events of a type fall under this subscription's ``event``.

        Args:
            event_type: A concrete event type.

        Returns:
            True if the type equals ``event`` or matches it as a NATS wildcard pattern.
        """
        return subject_matches(self.event, event_type)

    def admits(self, event: contract.TriggeredEvent) -> bool:
        """Tell whether the subscription asks for an event: its type and its scope.

        Args:
            event: A received triggered event.

        Returns:
            True if the type is covered and each non-empty filter holds the event's value.
        """
        checks = (
            (self.projects, event.project),
            (self.stages, event.stage),
            (self.services, event.service),
        )
        scope_ok = all(not allowed or value in allowed for allowed, value in checks)
        return scope_ok and self.covers(event.type)


def subscription_for(
    registration: TaskRegistration, *, webhook: Webhook | None = None
) -> Subscription:
    """Build the subscription that asks for what a handler handles.

    The control plane refuses a filter with services but no stages (Keptn's rule), so for
    a handler filtered on services alone the services are left out: the subscription then
    admits more than the handler, and the handler's own filter drops the rest.

    Args:
        registration: A task handler with its filters.
        webhook: Where to push the events, for HTTP push.

    Returns:
        The subscription to send in the registration.
    """
    stages = sorted(registration.stages or ())
    return Subscription.for_task(
        registration.task,
        projects=sorted(registration.projects or ()),
        stages=stages,
        services=sorted(registration.services or ()) if stages else (),
        webhook=webhook,
    )


def parse_subscriptions(value: object) -> tuple[Subscription, ...]:
    """Read the ``subscriptions`` of an integration, skipping malformed entries.

    Args:
        value: The ``subscriptions`` field of a ping answer.

    Returns:
        The usable subscriptions, in the server's order.
    """
    if not isinstance(value, list):
        return ()
    found: list[Subscription] = []
    for item in value:
        try:
            found.append(Subscription.from_json(item if isinstance(item, Mapping) else {}))
        except ValueError as exc:
            logger.warning("integration.bad_subscription %s: %r", exc, item)
    return tuple(found)


@dataclasses.dataclass(frozen=True, slots=True)
class IntegrationRegistration:
    """What a service tells the control plane about itself when it registers.

    Attributes:
        name: The integration name: the app name.
        subscriptions: One subscription per handler.
        location: ``control-plane`` (NATS) or ``remote-execution-plane`` (HTTP).
        hostname: The machine's host name; part of the integration id.
        namespace: The Kubernetes namespace; part of the integration id.
        podname: The Kubernetes pod name, if any.
        integration_version: The version of this SDK.
        expires: Whether the registration lapses when its pings stop.
    """

    name: str
    subscriptions: tuple[Subscription, ...]
    location: str
    hostname: str
    namespace: str = "default"
    podname: str = ""
    integration_version: str = ""
    expires: bool = True

    @classmethod
    def of_this_process(
        cls,
        name: str,
        subscriptions: Iterable[Subscription],
        *,
        location: str,
        environ: Mapping[str, str] | None = None,
    ) -> IntegrationRegistration:
        """Describe this process: host name, and the Kubernetes namespace and pod if any.

        The namespace comes from ``POD_NAMESPACE`` or ``NAMESPACE`` (else ``default``), the
        pod name from ``HOSTNAME``, as Kubernetes sets them with the downward API.

        Args:
            name: The integration name.
            subscriptions: The subscriptions to ask for.
            location: :data:`LOCATION_CONTROL_PLANE` or :data:`LOCATION_REMOTE`.
            environ: The environment to read; the process environment if not given.

        Returns:
            The registration.
        """
        env = os.environ if environ is None else environ
        return cls(
            name=name,
            subscriptions=tuple(subscriptions),
            location=location,
            hostname=socket.gethostname(),
            namespace=env.get("POD_NAMESPACE") or env.get("NAMESPACE") or "default",
            podname=env.get("HOSTNAME", ""),
            integration_version=tasksdk.__version__,
        )

    def to_json(self) -> dict[str, Any]:
        """Render the registration body.

        Returns:
            The body of ``POST /api/controlPlane/v1/uniform/registration``.
        """
        return {
            "name": self.name,
            "metadata": {
                "hostname": self.hostname,
                "integrationversion": self.integration_version,
                "distributorversion": "",
                "location": self.location,
                "kubernetesmetadata": {
                    "namespace": self.namespace,
                    "podname": self.podname,
                    "deploymentname": "",
                },
            },
            "subscriptions": [subscription.to_json() for subscription in self.subscriptions],
            "expires": self.expires,
        }


class Integration:
    """This process's registration with the control plane: registered, pinged, followed.

    Which subscriptions apply depends on how the service receives events: over NATS and
    pull the ones without a webhook; for push the ones with one (the server chooses what to
    push, so a push service only watches them to warn about gaps).
    """

    def __init__(
        self,
        api_client: api.ControlPlaneApi,
        registration: IntegrationRegistration,
        *,
        ping_interval: float = 10.0,
        push: bool = False,
        on_subscriptions: SubscriptionsListener | None = None,
    ) -> None:
        """Create the integration; :meth:`start` registers it.

        Args:
            api_client: The control plane API.
            registration: What to register.
            ping_interval: Seconds between heartbeats; subscription edits take effect
                within one interval.
            push: Whether the service receives pushed webhooks (else NATS or pull).
            on_subscriptions: Called with the applicable subscriptions whenever they
                change, first right after registering.
        """
        self._api = api_client
        self._registration = registration
        self._ping_interval = ping_interval
        self._push = push
        self._listener = on_subscriptions
        self._id: str | None = None
        self._subscriptions: tuple[Subscription, ...] | None = None
        self._pinging: asyncio.Task[None] | None = None

    @property
    def id(self) -> str | None:
        """The integration id, once registered."""
        return self._id

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The applicable subscriptions last received (empty before the first)."""
        return self._subscriptions or ()

    async def start(self) -> None:
        """Register (retrying while the API is unreachable), apply the subscriptions, ping.

        Raises:
            RegistrationError: If the control plane refused the registration.
            TransportError: If the API stayed unreachable for every attempt.
        """
        await self._register()
        self._pinging = asyncio.create_task(
            self._ping_forever(), name=f"tasksdk ping {self._registration.name}"
        )

    async def stop(self) -> None:
        """Stop pinging; the registration stays and expires by TTL unless pinged again."""
        if self._pinging is None:
            return
        self._pinging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pinging
        self._pinging = None

    async def _register(self) -> None:
        answer = await self._api.register(self._registration.to_json())
        self._id = answer.id
        logger.info(
            "integration.registered %s id=%s new=%s",
            self._registration.name,
            answer.id,
            answer.created,
        )
        try:
            integration = await self._api.ping(answer.id)
        except errors.TransportError as exc:
            # Until a ping succeeds, serve what this service asked for.
            logger.warning(
                "integration.first_ping_failed %s; using the declared subscriptions", exc
            )
            await self._apply(self._applicable(self._registration.subscriptions))
            return
        subscriptions = self._applicable(parse_subscriptions(integration.get("subscriptions")))
        if not answer.created:
            self._warn_about_gaps(answer.id, subscriptions)
        await self._apply(subscriptions)

    async def _ping_forever(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await self._ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._log_failure(failures, exc)
                continue
            if failures:
                logger.info("integration.ping_recovered after %d failures", failures)
            failures = 0

    async def _ping(self) -> None:
        assert self._id is not None, "pinging starts after registering"
        try:
            integration = await self._api.ping(self._id)
        except errors.ApiError as exc:
            if exc.status != 404:
                raise
            logger.warning("integration.expired %s; registering again", self._id)
            await self._register()
            return
        await self._apply(self._applicable(parse_subscriptions(integration.get("subscriptions"))))

    async def _apply(self, subscriptions: tuple[Subscription, ...]) -> None:
        if subscriptions == self._subscriptions:
            return
        logger.info(
            "integration.subscriptions %s",
            json.dumps([_loggable(subscription) for subscription in subscriptions]),
        )
        if self._listener is not None:
            await self._listener(subscriptions)
        # Only now: if the listener failed, the next ping tries again.
        self._subscriptions = subscriptions

    def _applicable(self, subscriptions: Iterable[Subscription]) -> tuple[Subscription, ...]:
        return tuple(s for s in subscriptions if (s.webhook is not None) == self._push)

    def _warn_about_gaps(
        self, integration_id: str, subscriptions: tuple[Subscription, ...]
    ) -> None:
        """Name each task that the kept subscriptions leave without events, and the fix."""
        path = f"{self._api.url}{api.REGISTRATION_PATH}/{integration_id}/subscription"
        for wanted in self._registration.subscriptions:
            matching = [s for s in subscriptions if s.covers(wanted.event)]
            if not matching:
                logger.warning(
                    "integration.task_without_subscription: integration %r (id %s) was already "
                    "registered, so the control plane kept its stored subscriptions and none of "
                    "them asks for %s: this task gets no events. Add one with POST %s and the "
                    "body %s, or delete the registration so that the next start registers afresh",
                    self._registration.name,
                    integration_id,
                    wanted.event,
                    path,
                    json.dumps(_loggable(wanted)),
                )
            stale = [
                s
                for s in matching
                if wanted.webhook and s.webhook and s.webhook.url != wanted.webhook.url
            ]
            for subscription in stale:
                logger.warning(
                    "integration.webhook_elsewhere: subscription %s for %s pushes to %s, not to "
                    "%s; update it with PUT %s/%s (the stored secret was kept as well)",
                    subscription.id,
                    subscription.event,
                    subscription.webhook.url if subscription.webhook else "",
                    wanted.webhook.url if wanted.webhook else "",
                    path,
                    subscription.id,
                )

    def _log_failure(self, failures: int, exc: BaseException) -> None:
        if failures == FAILURES_BEFORE_ALARM:
            logger.error(
                "integration.ping_failing %d times in a row (%s); serving on with the last "
                "known subscriptions and still trying",
                failures,
                exc,
            )
        elif isinstance(exc, errors.TaskSdkError):
            logger.warning("integration.ping_failed (%d in a row): %s", failures, exc)
        else:
            logger.error("integration.ping_crashed (%d in a row)", failures, exc_info=exc)


def _loggable(subscription: Subscription) -> dict[str, Any]:
    """The subscription as JSON, with a webhook secret replaced: logs must not carry it."""
    body = subscription.to_json()
    if "secret" in body.get("webhook", {}):
        body["webhook"]["secret"] = "<the webhook secret>"
    return body


def _names(filters: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = filters.get(key) or []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"filter.{key} is not a list of names")
    return tuple(value)


def _webhook(value: object) -> Webhook | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("url"), str):
        return None
    mode = value.get("mode")
    return Webhook(url=value["url"], mode=mode if isinstance(mode, str) and mode else "structured")
