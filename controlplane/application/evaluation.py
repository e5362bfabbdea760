"""Built-in quality gates: the ``evaluation`` task (alias ``evaluate``), run in-process.

Keptn ran its quality gates in a separate service (lighthouse) that asked yet another
service for the metric values. Here the control plane answers the task itself, like any
task service would: it consumes ``evaluation.triggered`` and ``evaluate.triggered`` from its
own durable JetStream consumer, sends ``.started``, measures every objective's indicator,
judges them with Keptn's rules (:mod:`controlplane.domain.quality_gate`) and sends
``.finished``. Both answers have ids derived from the triggered event, so after a crash the
redelivered message produces the same events and the engine drops the repeats.

Where the SLO and the indicators come from, most specific first: the task's own
properties in the shipyard (``data.evaluation`` / ``data.evaluate``), then ``slo.yaml`` and
``sli.yaml`` stored for the service, its stage, its project (``sli.yaml`` layers merge by
indicator name). An indicator is read from the sequence's data, a Prometheus server, any
HTTP endpoint returning JSON, or an external SLI provider over ``get-sli`` events. Every
source has a time limit, and a source that fails yields a failed value naming the
objective and the cause: one bad source never holds or crashes the gate.

Past results (for relative criteria such as ``<=+10%``) are the stored ``.finished``
events of earlier evaluations of the same service, minus invalidated ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from controlplane.application.admission import IncomingEvent
from controlplane.application.envelope import Envelope, format_time
from controlplane.application.errors import Rejected
from controlplane.application.ports import (
    DocumentReader,
    EvaluationHistory,
    EventSink,
    InvalidDocument,
    MetricSources,
    PastEvaluation,
    ResourceStore,
    Secrets,
    Settle,
    SourceFailure,
)
from controlplane.domain import eventtypes, quality_gate, sli_sources, slo, timeframes
from controlplane.domain.errors import DomainError
from controlplane.domain.eventtypes import Phase
from controlplane.domain.execution import derived_id
from controlplane.domain.quality_gate import GateOutcome
from controlplane.domain.shipyard import GATE_TASKS, SLI_KEYS, SLO_KEYS
from controlplane.domain.sli import IndicatorValue, Timeframe
from controlplane.domain.sli_sources import IndicatorSpec, SliConfig

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_INLINE_CACHE = 256  # distinct inline gates kept parsed

TASKS = GATE_TASKS
TRIGGERED_SUBJECTS = tuple(eventtypes.task(name, Phase.TRIGGERED) for name in TASKS)
GET_SLI = "get-sli"
GET_SLI_FINISHED = eventtypes.task(GET_SLI, Phase.FINISHED)
SOURCE = "controlplane/evaluation"
# What Keptn's API put on the events its evaluation endpoint created.
TRIGGER_SOURCE = "https://github.com/keptn/keptn/api"
SLO_FILE = "slo.yaml"
# Keptn's prometheus-service kept its queries in prometheus/sli.yaml; ours is sli.yaml.
SLI_FILES = (("prometheus/sli.yaml", "prometheus"), ("sli.yaml", "prometheus"))
_STORED_FILES = (SLO_FILE, *(uri for uri, _ in SLI_FILES))


@dataclass(frozen=True, slots=True)
class EvaluationSettings:
    source_timeout: float = 10.0
    get_sli_timeout: float = 120.0
    prometheus_url: str = ""
    max_in_flight: int = 32
    # Deliveries of one triggered event before the gate gives up on an internal failure
    # (the bus or the database down) and answers errored instead of retrying for ever.
    attempts: int = 8


@dataclass(frozen=True, slots=True)
class _Config:
    """The SLO and indicator sources one evaluation uses, and the SLO's text as written."""

    slo: slo.SLO | None
    slo_text: str
    sli: SliConfig | None


@dataclass(slots=True)
class _Measured:
    values: list[IndicatorValue] = field(default_factory=list)
    sli_failure: str | None = None  # get-sli answered result fail: the gate's result is fail
    halted: GateOutcome | None = None  # get-sli aborted or errored: no judgement at all


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluation's outcome with what the ``.finished`` event reports beside it."""

    outcome: GateOutcome
    window: Timeframe | None = None
    slo_text: str = ""
    compared: tuple[str, ...] = ()


class Evaluator:
    def __init__(
        self,
        *,
        resources: ResourceStore,
        history: EvaluationHistory,
        sources: MetricSources,
        secrets: Secrets,
        documents: DocumentReader,
        events: EventSink,
        settings: EvaluationSettings | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._resources = resources
        self._history = history
        self._sources = sources
        self._secrets = secrets
        self._documents = documents
        self._events = events
        self._settings = settings or EvaluationSettings()
        self._clock = clock
        self._new_id = new_id
        self._slots = asyncio.Semaphore(self._settings.max_in_flight)
        self._inflight: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, asyncio.Future[Envelope]] = {}
        # An inline gate comes with every evaluation of its sequence: parse and quote it once.
        self._inline: OrderedDict[str, tuple[slo.SLO | None, str, SliConfig | None]] = OrderedDict()

    # ------------------------------------------------------------------ from the bus

    async def receive(self, event: Envelope, ack: Settle) -> None:
        """Take one consumed ``.triggered`` event; the evaluation goes on in the background."""
        if task_name(event.type) is None:
            await ack.processed()
            return
        task = asyncio.create_task(self._run(event, ack), name=f"evaluation {event.id}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def on_answer(self, event: Envelope) -> None:
        """Hand a ``get-sli.finished`` to the evaluation waiting for it (if it is ours)."""
        if event.type != GET_SLI_FINISHED:
            return
        waiting = self._waiting.get(event.triggered_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(event)

    async def stop(self) -> None:
        """Cancel evaluations in progress; their messages come back from the broker."""
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _run(self, event: Envelope, ack: Settle) -> None:
        try:
            async with self._slots:
                await self.answer(event)
            await ack.processed()
        except Rejected as exc:
            # The task ended meanwhile (aborted, timed out, or answered before a restart).
            logger.info("evaluation.refused", extra={"event_id": event.id, "reason": str(exc)})
            await ack.processed()
        except asyncio.CancelledError:
            await ack.retry(0)
            raise
        except Exception as exc:
            attempt = ack.attempt
            logger.exception("evaluation.failed", extra={"event_id": event.id, "attempt": attempt})
            if attempt < self._settings.attempts:
                await ack.retry(min(2.0**attempt, 60.0))
                return
            await self._give_up(event, exc)
            await ack.processed()

    def started_event(self, event: Envelope, task: str) -> Envelope:
        return build_started(event, task, self._clock())

    def finished_event(self, event: Envelope, task: str, verdict: Verdict) -> Envelope:
        return build_finished(event, task, verdict, self._clock())

    async def _give_up(self, event: Envelope, exc: Exception) -> None:
        task = task_name(event.type) or TASKS[0]
        outcome = quality_gate.errored_outcome(
            f"the evaluation could not be completed after {self._settings.attempts} attempts: {exc}"
        )
        finished = self.finished_event(event, task, Verdict(outcome))
        try:
            await self._events.submit([finished])
        except Exception:
            logger.exception("evaluation.give_up_failed", extra={"event_id": event.id})

    # ------------------------------------------------------------------ one evaluation

    async def answer(self, event: Envelope) -> Envelope:
        """Send ``.started``, evaluate, send ``.finished``; returns the ``.finished`` event."""
        task = task_name(event.type)
        if task is None:
            raise Rejected(f"{event.type} is not an evaluation task's .triggered event")
        await self._events.submit([self.started_event(event, task)])
        verdict = await self.evaluate(event)
        finished = self.finished_event(event, task, verdict)
        await self._events.submit([finished])
        logger.info(
            "evaluation.finished",
            extra={
                "keptn_context": event.keptn_context,
                "result": verdict.outcome.result,
                "score": verdict.outcome.score,
            },
        )
        return finished

    async def evaluate(self, event: Envelope) -> Verdict:
        """Judge the triggered event's project, stage and service; never raises for bad input.

        Storage and bus failures do raise: the message is then retried from the broker.
        """
        task = task_name(event.type) or TASKS[0]
        project, stage, service = event.project, event.stage, event.service
        if not (project and stage and service):
            return Verdict(
                quality_gate.errored_outcome(
                    "the evaluation.triggered event must name its project, stage and service"
                )
            )
        try:
            window = timeframes.event_window(event.data, self._clock())
        except timeframes.InvalidTimeframe as exc:
            return Verdict(quality_gate.errored_outcome(str(exc)))
        try:
            config = await self._config(event, task)
        except (InvalidDocument, DomainError) as exc:
            message = f"could not read the quality gate of service {service}: {exc}"
            return Verdict(quality_gate.errored_outcome(message), window)
        if config.sli is None:
            return Verdict(quality_gate.no_provider_outcome(project), window)
        if config.slo is None:
            return Verdict(quality_gate.no_slo_outcome(project), window)
        measured = await self._measure(event, config.slo, config.sli, window)
        if measured.halted is not None:
            return Verdict(measured.halted, window, config.slo_text)
        comparison = config.slo.comparison
        previous: list[PastEvaluation] = await self._history.past_evaluations(
            project,
            stage,
            service,
            results=comparison.result_filter,
            limit=comparison.results_to_fetch,
        )
        outcome = quality_gate.judge(
            config.slo,
            measured.values,
            [past.indicator_results for past in previous],
            sli_failure=measured.sli_failure,
        )
        compared = tuple(past.event_id for past in previous)
        return Verdict(outcome, window, config.slo_text, compared)

    # ------------------------------------------------------------------ configuration

    def _parse_inline(
        self, inline: Mapping[str, Any]
    ) -> tuple[slo.SLO | None, str, SliConfig | None]:
        """The inline SLO (parsed and as YAML text) and sources, cached by content."""
        key = json.dumps(inline, sort_keys=True, default=str)
        cached = self._inline.get(key)
        if cached is not None:
            self._inline.move_to_end(key)
            return cached
        parsed: slo.SLO | None = None
        text = ""
        if any(key in inline for key in SLO_KEYS):
            document = {key: inline[key] for key in SLO_KEYS if key in inline}
            parsed = slo.parse_slo(document)
            text = self._documents.dump(document)
        sources: SliConfig | None = None
        if any(key in inline for key in SLI_KEYS):
            sources = sli_sources.parse_sli(
                {key: inline[key] for key in SLI_KEYS if key in inline}, default_source="data"
            )
        self._inline[key] = (parsed, text, sources)
        if len(self._inline) > _INLINE_CACHE:
            self._inline.popitem(last=False)
        return parsed, text, sources

    async def _config(self, event: Envelope, task: str) -> _Config:
        inline = _inline(event.data, task)
        inline_slo, inline_text, inline_sli = (
            self._parse_inline(inline) if inline else (None, "", None)
        )
        # Every stored file the gate may read, from all three levels, in one round trip.
        stored = {
            (resource.stage, resource.service, resource.uri): resource
            for resource in await self._resources.level_resources(
                event.project, event.stage, event.service, _STORED_FILES
            )
        }
        levels = _levels(event.project, event.stage, event.service)
        parsed: slo.SLO | None = inline_slo
        slo_text = inline_text
        if parsed is None:
            # The most specific SLO: the service's, else its stage's, else the project's.
            for level in reversed(levels):
                found = stored.get((*level[1:], SLO_FILE))
                if found is not None:
                    slo_text = found.content
                    source = _describe(level, SLO_FILE)
                    parsed = slo.parse_slo(self._documents.load(slo_text, source))
                    break
        sli: SliConfig | None = None
        for level in levels:
            for uri, default_source in SLI_FILES:
                found = stored.get((*level[1:], uri))
                if found is None:
                    continue
                layer = sli_sources.parse_sli(
                    self._documents.load(found.content, _describe(level, uri)),
                    default_source=default_source,
                )
                sli = layer if sli is None else sli_sources.merge_sli(sli, layer)
        if inline_sli is not None:
            sli = inline_sli if sli is None else sli_sources.merge_sli(sli, inline_sli)
        return _Config(parsed, slo_text, sli)

    # ------------------------------------------------------------------ measuring

    async def _measure(
        self, event: Envelope, gate: slo.SLO, sli: SliConfig, window: Timeframe
    ) -> _Measured:
        names = list(dict.fromkeys(objective.sli for objective in gate.objectives))
        variables = sli_sources.placeholders(
            project=event.project,
            stage=event.stage,
            service=event.service,
            deployment=_deployment(event.data),
            window=window,
            filters=gate.filter,
        )
        by_provider: list[str] = []
        direct: dict[str, Awaitable[IndicatorValue]] = {}
        for name in names:
            spec = sli.indicators.get(name)
            if spec is None and not sli.provider:
                direct[name] = _ready(IndicatorValue.failed(name, _no_source(name)))
            elif spec is None or spec.source == GET_SLI:
                by_provider.append(name)
            else:
                direct[name] = self._measure_one(spec, event.data, sli, variables, window)
        measured = _Measured()
        asked: Awaitable[None] = (
            self._ask_provider(event, gate, sli, window, by_provider, measured)
            if by_provider
            else _ready(None)
        )
        *values, _ = await asyncio.gather(*direct.values(), asked)
        measured.values.extend(value for value in values if value is not None)
        return measured

    async def _measure_one(
        self,
        spec: IndicatorSpec,
        data: Mapping[str, Any],
        sli: SliConfig,
        variables: Mapping[str, str],
        window: Timeframe,
    ) -> IndicatorValue:
        limit = self._settings.source_timeout
        try:
            if spec.source == "data":
                path = sli_sources.expand(spec.path, variables)
                return sli_sources.value_at(data, path, metric=spec.name)
            if spec.source == "prometheus":
                server = sli.prometheus
                url = spec.url or (server.url if server else "") or self._settings.prometheus_url
                if not url:
                    return IndicatorValue.failed(
                        spec.name,
                        f"no Prometheus server for indicator {spec.name}: set prometheus.url"
                        " in sli.yaml or CONTROLPLANE_PROMETHEUS_URL",
                    )
                headers = dict(server.headers) if server and not spec.url else {}
                headers.update(spec.headers)
                auth = spec.auth or (server.auth if server and not spec.url else None)
                value = await asyncio.wait_for(
                    self._sources.query_prometheus(
                        url,
                        sli_sources.expand(spec.query, variables),
                        at=window.end,
                        headers=self._authorized(headers, auth, variables),
                        time_limit=limit,
                    ),
                    timeout=limit + 1.0,
                )
                return IndicatorValue(spec.name, value)
            if spec.source == "http":
                document = await asyncio.wait_for(
                    self._sources.fetch_json(
                        sli_sources.expand(spec.url, variables),
                        method=spec.method,
                        headers=self._authorized(spec.headers, spec.auth, variables),
                        body=sli_sources.expand(spec.body, variables) if spec.body else None,
                        time_limit=limit,
                    ),
                    timeout=limit + 1.0,
                )
                path = sli_sources.expand(spec.path, variables)
                return sli_sources.value_at(document, path, metric=spec.name)
        except SourceFailure as exc:
            return IndicatorValue.failed(spec.name, str(exc))
        except TimeoutError:
            return IndicatorValue.failed(
                spec.name, f"the {spec.source} source gave no value within {limit:g}s"
            )
        except _MissingSecret as exc:
            return IndicatorValue.failed(spec.name, str(exc))
        return IndicatorValue.failed(spec.name, f"unknown source {spec.source!r}")

    def _authorized(
        self,
        headers: Mapping[str, str],
        auth: sli_sources.Auth | None,
        variables: Mapping[str, str],
    ) -> dict[str, str]:
        """The request's headers, placeholders expanded, with the credential the source names."""
        expanded = {key: sli_sources.expand(value, variables) for key, value in headers.items()}
        if auth is None:
            return expanded
        secret = self._secrets.get(auth.secret)
        if secret is None:
            raise _MissingSecret(
                f"the secret {auth.secret!r} is not set (environment variable"
                f" CONTROLPLANE_SECRET_{_env_name(auth.secret)} or a file in the secrets"
                " directory)"
            )
        return {**expanded, **auth.header(secret)}

    async def _ask_provider(
        self,
        event: Envelope,
        gate: slo.SLO,
        sli: SliConfig,
        window: Timeframe,
        names: list[str],
        measured: _Measured,
    ) -> None:
        """Keptn's way: send ``get-sli.triggered`` and wait for the provider's ``.finished``."""
        request = Envelope(
            id=self._new_id(),
            source=SOURCE,
            type=eventtypes.task(GET_SLI, Phase.TRIGGERED),
            time=format_time(self._clock()),
            data={
                "project": event.project,
                "stage": event.stage,
                "service": event.service,
                "labels": _labels(event.data),
                GET_SLI: {
                    "sliProvider": sli.provider,
                    "start": format_time(window.start),
                    "end": format_time(window.end),
                    "indicators": names,
                    "customFilters": [
                        {"key": key, "value": value} for key, value in gate.filter.items()
                    ],
                },
                "deployment": _deployment(event.data),
            },
            keptn_context=event.keptn_context,
            gitcommitid=event.gitcommitid,
        )
        answer: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = answer
        limit = self._settings.get_sli_timeout
        try:
            await self._events.submit([request])
            finished = await asyncio.wait_for(answer, timeout=limit)
        except TimeoutError:
            provider = sli.provider or "SLI provider"
            message = f"the {provider!r} provider sent no get-sli.finished within {limit:g}s"
            measured.values.extend(IndicatorValue.failed(name, message) for name in names)
            return
        finally:
            self._waiting.pop(request.id, None)
        _read_provider_answer(finished.data, measured)


def task_name(event_type: str) -> str | None:
    """``evaluation`` or ``evaluate`` for their ``.triggered`` types, else None."""
    try:
        parsed = eventtypes.parse(event_type)
    except eventtypes.EventTypeError:
        return None
    if (
        isinstance(parsed, eventtypes.TaskEventType)
        and parsed.task in TASKS
        and parsed.phase == Phase.TRIGGERED
    ):
        return parsed.task
    return None


def build_started(event: Envelope, task: str, now: float) -> Envelope:
    return Envelope(
        id=derived_id(event.id, task, "started"),
        source=SOURCE,
        type=eventtypes.task(task, Phase.STARTED),
        time=format_time(now),
        data={**_scope(event), "status": "succeeded"},
        keptn_context=event.keptn_context,
        triggered_id=event.id,
        gitcommitid=event.gitcommitid,
    )


def build_finished(event: Envelope, task: str, verdict: Verdict, now: float) -> Envelope:
    """Keptn's ``evaluation.finished``: the decision, the score and every objective's detail."""
    outcome = verdict.outcome
    window = verdict.window
    details = {
        "timeStart": format_time(window.start) if window else "",
        "timeEnd": format_time(window.end) if window else "",
        "result": outcome.evaluation_result,
        "score": outcome.score,
        "sloFileContent": base64.b64encode(verdict.slo_text.encode()).decode("ascii"),
        "indicatorResults": list(outcome.indicator_results) or None,
        "comparedEvents": list(verdict.compared),
        "gitCommit": event.gitcommitid,
    }
    data = {
        **_scope(event),
        "status": outcome.status,
        "result": outcome.result,
        "message": outcome.message,
        "evaluation": _go_numbers(details),
    }
    return Envelope(
        id=derived_id(event.id, task, "finished"),
        source=SOURCE,
        type=eventtypes.task(task, Phase.FINISHED),
        time=format_time(now),
        data=data,
        keptn_context=event.keptn_context,
        triggered_id=event.id,
        gitcommitid=event.gitcommitid,
    )


def trigger_request(
    project: str,
    stage: str,
    service: str,
    *,
    start: str = "",
    end: str = "",
    timeframe: str = "",
    labels: Mapping[str, str] | None = None,
    gitcommitid: str = "",
    now: float,
) -> IncomingEvent:
    """The ``<stage>.evaluation.triggered`` that Keptn's evaluation endpoint created.

    Raises:
        InvalidTimeframe: the start, end and timeframe do not make a window.
    """
    window = timeframes.requested_window(start, end, timeframe, now)
    attributes: dict[str, Any] = {
        "type": eventtypes.sequence(stage, TASKS[0], Phase.TRIGGERED),
        "source": TRIGGER_SOURCE,
        "specversion": "1.0",
    }
    if gitcommitid:
        attributes["gitcommitid"] = gitcommitid
    data = {
        "project": project,
        "stage": stage,
        "service": service,
        "labels": dict(labels or {}),
        "evaluation": {"start": format_time(window.start), "end": format_time(window.end)},
    }
    return IncomingEvent(attributes, data)


class _MissingSecret(Exception):
    """A source names a secret the control plane does not have."""


def _read_provider_answer(data: Mapping[str, Any], measured: _Measured) -> None:
    status = data.get("status")
    if status == "aborted":
        measured.halted = quality_gate.aborted_sli_outcome()
        return
    if status == "errored":
        measured.halted = quality_gate.errored_sli_outcome(str(data.get("message") or ""))
        return
    if data.get("result") == "fail":
        measured.sli_failure = str(data.get("message") or "")
    payload = data.get(GET_SLI)
    reported = payload.get("indicatorValues") if isinstance(payload, Mapping) else None
    found: dict[str, IndicatorValue] = {}
    for item in reported if isinstance(reported, list) else []:
        value = _provider_value(item)
        if value is not None and value.metric not in found:
            found[value.metric] = value
    # Values the provider sent unasked are kept (the gate reports them as extra SLIs);
    # asked-for values it left out are reported missing by the gate.
    measured.values.extend(found.values())


def _provider_value(item: object) -> IndicatorValue | None:
    if not isinstance(item, Mapping) or not isinstance(item.get("metric"), str):
        return None
    number = item.get("value")
    if isinstance(number, bool) or not isinstance(number, int | float):
        return IndicatorValue.failed(item["metric"], f"the provider sent value {number!r}")
    success = item.get("success", True) is not False
    return IndicatorValue(item["metric"], float(number), success, str(item.get("message") or ""))


def _inline(data: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    own = data.get(task)
    return own if isinstance(own, Mapping) else {}


def _levels(project: str, stage: str, service: str) -> list[tuple[str, str, str]]:
    """Project, stage and service level, least specific first."""
    return [(project, "", ""), (project, stage, ""), (project, stage, service)]


def _describe(level: tuple[str, str, str], uri: str) -> str:
    project, stage, service = level
    where = f"project {project}"
    if stage:
        where += f", stage {stage}"
    if service:
        where += f", service {service}"
    return f"{uri} ({where})"


def _scope(event: Envelope) -> dict[str, Any]:
    return {
        "project": event.project,
        "stage": event.stage,
        "service": event.service,
        "labels": _labels(event.data),
    }


def _labels(data: Mapping[str, Any]) -> dict[str, Any]:
    labels = data.get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def _deployment(data: Mapping[str, Any]) -> str:
    deployment = data.get("deployment")
    names = deployment.get("deploymentNames") if isinstance(deployment, Mapping) else None
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return ""


def _no_source(name: str) -> str:
    return (
        f"no source is configured for indicator {name}: add it under indicators in sli.yaml"
        " or in the task's properties"
    )


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


async def _ready(value: _T) -> _T:
    return value


def _go_numbers(value: Any) -> Any:
    """Whole floats as ints, so the JSON reads ``74`` where Keptn (Go) wrote ``74``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _go_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_go_numbers(item) for item in value]
    return value
