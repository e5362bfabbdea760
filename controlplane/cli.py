"""The client half of the ``controlplane`` command: validate shipyards, and talk to the HTTP API.

Why the client commands go through the HTTP API and nothing else: it is the same contract
Keptn's clients and any script use, so the CLI needs no database or NATS access, works against
a remote control plane, and exercises the API the way users do. Each command function takes
an :class:`httpx.Client`, so tests hand it one with a mock transport.

Exit codes: 0 success (for ``trigger --wait``: the sequence ended with pass or warning), 1 the
sequence failed, was aborted or timed out, or the server failed, 2 a usage error, a request
the server refused (4xx) or a control plane that cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from controlplane.adapters.files import YamlShipyardReader
from controlplane.application.envelope import parse_time
from controlplane.domain import durations, eventtypes, graph
from controlplane.domain.errors import InvalidShipyard
from controlplane.domain.eventtypes import Phase, SequenceEventType
from controlplane.domain.quality_gate import go_number

DEFAULT_URL = "http://127.0.0.1:8080"
SOURCE = "controlplane-cli"
FINAL_STATES = ("finished", "aborted", "timedOut")
OPEN_STAGE_STATES = ("triggered", "started", "waiting", "paused")
_PAGE = 100
_REGISTRATION = "/api/controlPlane/v1/uniform/registration"
_RESOURCES = "/api/resource-service/v1"
_REQUEST_TIMEOUT = 10.0

Command = Callable[["ApiClient", argparse.Namespace], int]


# ---------------------------------------------------------------------- argparse wiring


def add_client_commands(subparsers: Any) -> None:
    """Add the client commands to ``subparsers``: everything but the server roles."""
    validate = subparsers.add_parser(
        "validate", help="check shipyard files", description="Check shipyard files."
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=run_validate)

    trigger = client_parser(subparsers, "trigger", "start a sequence")
    trigger.add_argument("project")
    trigger.add_argument("stage")
    trigger.add_argument("sequence")
    trigger.add_argument("--service", help="the service (default: the project name)")
    trigger.add_argument(
        "--data", type=_json_object, default={}, help="JSON object merged into the event data"
    )
    trigger.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label for the sequence (repeatable)",
    )
    trigger.add_argument(
        "--wait", action="store_true", help="show each task as it happens until the sequence ends"
    )
    trigger.add_argument(
        "--timeout", type=_duration, default=600.0, help="how long --wait waits (default 10m)"
    )
    trigger.add_argument("--poll-interval", type=float, default=0.2, help=argparse.SUPPRESS)
    trigger.set_defaults(func=client_handler(trigger_sequence))

    sequences = client_parser(subparsers, "sequences", "list a project's sequences and states")
    sequences.add_argument("project")
    sequences.add_argument("--state", default="", help="only sequences in this state")
    sequences.set_defaults(func=client_handler(list_sequences))

    events = client_parser(subparsers, "events", "show the event trace of a keptnContext")
    events.add_argument("context", metavar="CONTEXT")
    events.add_argument("--project", default="")
    events.set_defaults(func=client_handler(show_events))

    integrations = client_parser(
        subparsers, "integrations", "list registered task services and their subscriptions"
    )
    integrations.add_argument("--json", action="store_true", help="print the API's JSON")
    integrations.set_defaults(func=client_handler(list_integrations))

    subscribe = client_parser(subparsers, "subscribe", "add a subscription to an integration")
    subscribe.add_argument("integration", metavar="INTEGRATION_ID")
    subscribe.add_argument("event", metavar="EVENT", help="e.g. checknumber.triggered")
    for scope in ("project", "stage", "service"):
        subscribe.add_argument(
            f"--{scope}", action="append", default=[], help=f"only this {scope} (repeatable)"
        )
    subscribe.add_argument("--webhook", metavar="URL", help="push matching events to this URL")
    subscribe.add_argument(
        "--secret",
        default=os.environ.get("CONTROLPLANE_WEBHOOK_SECRET"),
        help="the webhook's signing secret (CONTROLPLANE_WEBHOOK_SECRET)",
    )
    subscribe.add_argument("--mode", choices=("structured", "binary"), default="structured")
    subscribe.set_defaults(func=client_handler(add_subscription))

    unsubscribe = client_parser(subparsers, "unsubscribe", "remove a subscription")
    unsubscribe.add_argument("integration", metavar="INTEGRATION_ID")
    unsubscribe.add_argument("subscription", metavar="SUBSCRIPTION_ID")
    unsubscribe.set_defaults(func=client_handler(remove_subscription))

    for action, text in (
        ("pause", "pause a running sequence"),
        ("resume", "resume a paused sequence"),
        ("abort", "abort a sequence"),
    ):
        control = client_parser(subparsers, action, text)
        control.add_argument("context", metavar="CONTEXT")
        control.add_argument("--project", required=True)
        control.add_argument("--stage", default="", help="only this stage")
        control.set_defaults(func=client_handler(control_sequence), action=action)

    rerun = client_parser(
        subparsers, "rerun", "re-run an ended sequence from its failed task, in a new context"
    )
    rerun.add_argument("context", metavar="CONTEXT")
    rerun.add_argument("--project", required=True)
    rerun.add_argument("--from-task", default="", help="start at this task instead")
    rerun.add_argument("--stage", default="", help="the stage to re-run (default: the failed one)")
    rerun.add_argument(
        "--wait", action="store_true", help="show each task as it happens until the run ends"
    )
    rerun.add_argument(
        "--timeout", type=_duration, default=600.0, help="how long --wait waits (default 10m)"
    )
    rerun.add_argument("--poll-interval", type=float, default=0.2, help=argparse.SUPPRESS)
    rerun.set_defaults(func=client_handler(rerun_sequence))

    diagram = client_parser(
        subparsers, "diagram", "print a project's stages, sequences and links as a Mermaid chart"
    )
    diagram.add_argument("project", nargs="?", help="a project of the control plane")
    diagram.add_argument("--file", metavar="FILE", help="draw this shipyard file, offline")
    diagram.set_defaults(func=run_diagram)


def client_parser(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand with the ``--url`` and ``--token`` options every API command has."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=text)
    parser.add_argument(
        "--url",
        default=os.environ.get("CONTROLPLANE_URL", DEFAULT_URL),
        help=f"the control plane's URL (CONTROLPLANE_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CONTROLPLANE_API_TOKEN"),
        help="the API token (CONTROLPLANE_API_TOKEN)",
    )
    return parser


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object such as '{\"key\": 1}'")
    return value


def _label(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"labels read KEY=VALUE, got {text!r}")
    return key, value


def _duration(text: str) -> float:
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------- validate


def run_validate(args: argparse.Namespace) -> int:
    """Parse each shipyard file; print every problem on its own line; 1 if any is invalid."""
    reader = YamlShipyardReader()
    failed = False
    for name in args.files:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{name}: cannot read the file: {_reason(exc)}")
            failed = True
            continue
        try:
            shipyard = reader.read(text, name)
        except InvalidShipyard as exc:
            for problem in exc.problems:
                print(problem.render(name))
            failed = True
            continue
        for warning in shipyard.warnings:
            print(f"{name}: warning: {warning}")
        count = sum(len(stage.sequences) for stage in shipyard.stages)
        print(f"{name}: ok ({len(shipyard.stages)} stages, {count} sequences)")
    return 1 if failed else 0


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


# ---------------------------------------------------------------------- the API client


class ApiError(Exception):
    """The control plane answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiClient:
    """The few calls the CLI makes, with the server's error message kept."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def send_event(self, event: Mapping[str, Any]) -> str:
        body = self._call(
            "POST",
            "/api/v1/event",
            content=json.dumps(event).encode(),
            headers={"content-type": "application/cloudevents+json"},
        )
        return str(body["keptnContext"])

    def sequence_states(
        self, project: str, *, context: str = "", state: str = ""
    ) -> list[dict[str, Any]]:
        params = {
            key: value for key, value in (("keptnContext", context), ("state", state)) if value
        }
        body = self._call(
            "GET", f"/api/controlPlane/v1/sequence/{quote_segment(project)}", params=params
        )
        return list(body["states"])

    def events(self, context: str, *, project: str = "") -> Iterator[dict[str, Any]]:
        """Every event of the context, newest first, one page at a time."""
        key = "0"
        while True:
            params = {"keptnContext": context, "pageSize": str(_PAGE), "nextPageKey": key}
            if project:
                params["project"] = project
            body = self._call("GET", "/api/mongodb-datastore/event", params=params)
            yield from body["events"]
            key = str(body.get("nextPageKey") or "0")
            if key == "0":
                return

    def control(self, project: str, context: str, action: str, stage: str) -> None:
        self._call(
            "POST",
            f"/api/controlPlane/v1/sequence/{quote_segment(project)}"
            f"/{quote_segment(context)}/control",
            json={"state": action, "stage": stage},
        )

    def rerun(self, project: str, context: str, *, from_task: str, stage: str) -> dict[str, Any]:
        body = {key: value for key, value in (("fromTask", from_task), ("stage", stage)) if value}
        found: dict[str, Any] = self._call(
            "POST",
            f"/api/controlPlane/v1/sequence/{quote_segment(project)}"
            f"/{quote_segment(context)}/rerun",
            json=body,
        )
        return found

    def integrations(self) -> list[dict[str, Any]]:
        return list(self._call("GET", _REGISTRATION))

    def add_subscription(self, integration: str, subscription: Mapping[str, Any]) -> str:
        path = f"{_REGISTRATION}/{quote_segment(integration)}/subscription"
        return str(self._call("POST", path, json=subscription)["id"])

    def remove_subscription(self, integration: str, subscription: str) -> None:
        path = (
            f"{_REGISTRATION}/{quote_segment(integration)}"
            f"/subscription/{quote_segment(subscription)}"
        )
        self._call("DELETE", path)

    def trigger_evaluation(
        self, project: str, stage: str, service: str, request: Mapping[str, Any]
    ) -> str:
        path = (
            f"/api/controlPlane/v1/project/{quote_segment(project)}/stage/{quote_segment(stage)}"
            f"/service/{quote_segment(service)}/evaluation"
        )
        return str(self._call("POST", path, json=request)["keptnContext"])

    def put_resources(self, level: str, files: Mapping[str, bytes]) -> str:
        """Store files at ``level`` (``/project/p[/stage/s[/service/x]]``); returns the version."""
        resources = [
            {"resourceURI": uri, "resourceContent": base64.b64encode(content).decode("ascii")}
            for uri, content in files.items()
        ]
        body = self._call("PUT", f"{_RESOURCES}{level}/resource", json={"resources": resources})
        return str(body.get("commitID", ""))

    def get_resource(self, level: str, uri: str) -> bytes:
        body = self._call("GET", f"{_RESOURCES}{level}/resource/{quote(uri)}")
        return base64.b64decode(body["resourceContent"])

    def diagram(self, project: str) -> str:
        """The project's Mermaid flowchart, drawn by the server from its current shipyard."""
        path = f"/api/controlPlane/v1/project/{quote_segment(project)}/diagram"
        return str(self._call("GET", path, params={"format": "json"})["mermaid"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError(response.status_code, _message(response))
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                f"{response.url} did not answer with JSON; is it the control plane?",
            ) from None


def quote_segment(value: str) -> str:
    """``value`` escaped to be one segment of a URL path."""
    return quote(value, safe="")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text.strip()


def client_handler(command: Command) -> Callable[..., int]:
    """Wrap a command: build the HTTP client from ``--url``/``--token`` unless one is given."""

    def handler(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
        with ExitStack() as stack:
            if client is None:
                client = stack.enter_context(build_client(args))
            try:
                return command(ApiClient(client), args)
            except httpx.TimeoutException:
                _error(f"the control plane at {args.url} did not answer in time")
                return 2
            except httpx.TransportError as exc:
                _error(
                    f"cannot reach the control plane at {args.url} ({exc or type(exc).__name__});"
                    " it may not be running (start it with `controlplane up`)"
                )
                return 2
            except ApiError as exc:
                _error(f"{exc.message} (HTTP {exc.status})")
                return 2 if exc.status < 500 else 1
            except KeyboardInterrupt:
                _error("interrupted; a triggered sequence goes on running")
                return 130

    return handler


def build_client(args: argparse.Namespace) -> httpx.Client:
    headers = {"x-token": args.token} if args.token else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=_REQUEST_TIMEOUT)


def _error(message: str) -> None:
    print(f"controlplane: {message}", file=sys.stderr)


# ---------------------------------------------------------------------- commands


def trigger_sequence(api: ApiClient, args: argparse.Namespace) -> int:
    data: dict[str, Any] = dict(args.data)
    data.update(project=args.project, stage=args.stage, service=args.service or args.project)
    if args.label:
        data["labels"] = {**(data.get("labels") or {}), **dict(args.label)}
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": eventtypes.sequence(args.stage, args.sequence, Phase.TRIGGERED),
        "datacontenttype": "application/json",
        "data": data,
    }
    context = api.send_event(event)
    print(context, flush=True)
    if not args.wait:
        return 0
    return _watch(api, args.project, context, timeout=args.timeout, interval=args.poll_interval)


def _watch(api: ApiClient, project: str, context: str, *, timeout: float, interval: float) -> int:
    deadline = time.monotonic() + timeout
    trace: list[dict[str, Any]] = []
    seen: set[str] = set()
    while True:
        state = _context_state(api, project, context)
        for event in _new_events(api, context, seen):
            trace.append(event)
            print(_line(event), flush=True)
        if state is not None and _ended(state):
            return _verdict(state, trace)
        if time.monotonic() >= deadline:
            current = state["state"] if state else "not visible yet"
            _error(
                f"gave up waiting after {durations.format_duration(timeout)}; the sequence is"
                f" {current} (keptnContext {context})"
            )
            return 1
        time.sleep(interval)


def _context_state(api: ApiClient, project: str, context: str) -> dict[str, Any] | None:
    states = api.sequence_states(project, context=context)
    return states[0] if states else None


def _new_events(api: ApiClient, context: str, seen: set[str]) -> list[dict[str, Any]]:
    """Events not printed yet, oldest first; stops paging at the first one already seen."""
    fresh: list[dict[str, Any]] = []
    for event in api.events(context):
        key = str(event.get("id", ""))
        if key in seen:
            break
        seen.add(key)
        fresh.append(event)
    return fresh[::-1]


def _ended(state: Mapping[str, Any]) -> bool:
    stages = state.get("stages") or []
    return state.get("state") in FINAL_STATES and all(
        stage.get("state") not in OPEN_STAGE_STATES for stage in stages
    )


def _verdict(state: Mapping[str, Any], trace: list[dict[str, Any]]) -> int:
    endings = [event for event in trace if _is_sequence_end(event)]
    results = [str((event.get("data") or {}).get("result") or "") for event in endings]
    statuses = [str((event.get("data") or {}).get("status") or "") for event in endings]
    if not endings or "fail" in results or "errored" in statuses or "" in results:
        result = "fail"
    elif "warning" in results:
        result = "warning"
    else:
        result = "pass"
    for task, output in _task_outputs(trace):
        print(f"{task} output: {json.dumps(output, ensure_ascii=False)}")
    for verdict in _gate_verdicts(trace):
        print_verdict(verdict)
    overall = str(state.get("state"))
    stages = ", ".join(f"{stage['name']} {stage['state']}" for stage in state.get("stages") or [])
    print(f"sequence {overall}: result {result} ({stages})")
    return 0 if overall == "finished" and result in ("pass", "warning") else 1


def _task_outputs(trace: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What each task reported under its own name in its ``.finished``, oldest first."""
    outputs = []
    for event in trace:
        try:
            parsed = eventtypes.parse(str(event.get("type", "")))
        except eventtypes.EventTypeError:
            continue
        data = event.get("data") or {}
        if (
            isinstance(parsed, eventtypes.TaskEventType)
            and parsed.phase is Phase.FINISHED
            and parsed.task in data
        ):
            outputs.append((parsed.task, data[parsed.task]))
    return outputs


def _gate_verdicts(trace: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    """The data of each quality gate's ``.finished`` (it reports under ``evaluation``)."""
    verdicts = []
    for event in trace:
        data = event.get("data") or {}
        if str(event.get("type", "")).endswith(
            (".evaluation.finished", ".evaluate.finished")
        ) and isinstance(data.get("evaluation"), Mapping):
            verdicts.append(data)
    return verdicts


def _is_sequence_end(event: Mapping[str, Any]) -> bool:
    try:
        parsed = eventtypes.parse(str(event.get("type", "")))
    except eventtypes.EventTypeError:
        return False
    return isinstance(parsed, SequenceEventType) and parsed.phase == Phase.FINISHED


def list_sequences(api: ApiClient, args: argparse.Namespace) -> int:
    states = api.sequence_states(args.project, state=args.state)
    if not states:
        print(
            f"no sequences in project {args.project}"
            + (f" in state {args.state}" if args.state else "")
        )
        return 0
    rows: list[tuple[str, ...]] = [("TIME", "CONTEXT", "SEQUENCE", "STAGES", "STATE")]
    for state in states:
        stages = ",".join(
            f"{stage['name']}:{stage['state']}" for stage in state.get("stages") or []
        )
        rows.append((state["time"], state["shkeptncontext"], state["name"], stages, state["state"]))
    print_table(rows)
    return 0


def show_events(api: ApiClient, args: argparse.Namespace) -> int:
    events = list(api.events(args.context, project=args.project))
    if not events:
        _error(f"no events for keptnContext {args.context}")
        return 1
    for event in reversed(events):
        print(_line(event))
    return 0


def list_integrations(api: ApiClient, args: argparse.Namespace) -> int:
    found = api.integrations()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no integrations are registered")
        return 0
    rows: list[tuple[str, ...]] = [("NAME", "ID", "LAST SEEN", "SUBSCRIPTION", "EVENT", "FILTER")]
    now = time.time()
    for integration in found:
        seen = str((integration.get("metadata") or {}).get("lastseen") or "")
        head = (integration["name"], integration["id"], _ago(seen, now))
        subscriptions = integration.get("subscriptions") or []
        if not subscriptions:
            rows.append((*head, "-", "(none: receives nothing)", ""))
        for index, subscription in enumerate(subscriptions):
            cells = head if index == 0 else ("", "", "")
            rows.append(
                (
                    *cells,
                    subscription["id"],
                    str(subscription["event"]).removeprefix(eventtypes.PREFIX),
                    _describe_subscription(subscription),
                )
            )
    print_table(rows)
    return 0


def _ago(stamp: str, now: float) -> str:
    try:
        seconds = max(0.0, now - parse_time(stamp))
    except ValueError:
        return stamp or "-"
    if seconds < 1:
        return "just now"
    return f"{durations.format_duration(round(seconds))} ago"


def _describe_subscription(subscription: Mapping[str, Any]) -> str:
    scope = subscription.get("filter") or {}
    parts = [
        f"{key}={','.join(scope[key])}"
        for key in ("projects", "stages", "services")
        if scope.get(key)
    ]
    webhook = subscription.get("webhook")
    if webhook:
        parts.append(f"-> {webhook['url']} ({webhook.get('mode', 'structured')})")
    return " ".join(parts) or "any"


def add_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    subscription: dict[str, Any] = {
        "event": args.event,
        "filter": {"projects": args.project, "stages": args.stage, "services": args.service},
    }
    if args.webhook:
        if not args.secret:
            _error("--webhook needs --secret (or CONTROLPLANE_WEBHOOK_SECRET) to sign deliveries")
            return 2
        subscription["webhook"] = {"url": args.webhook, "secret": args.secret, "mode": args.mode}
    print(api.add_subscription(args.integration, subscription))
    return 0


def remove_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    api.remove_subscription(args.integration, args.subscription)
    print(f"removed subscription {args.subscription}")
    return 0


def run_diagram(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Print the Mermaid chart of a project (through the API) or of a file (offline).

    Only the chart goes to stdout, so it can be piped into a renderer; problems and warnings
    go to stderr. A file is read as ``validate`` reads it, and an invalid one exits 1.
    """
    if (args.project is None) == (args.file is None):
        _error("diagram needs a PROJECT or --file FILE, not both")
        return 2
    if args.project is not None:
        return client_handler(show_diagram)(args, client)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _error(f"{args.file}: cannot read the file: {_reason(exc)}")
        return 1
    try:
        shipyard = YamlShipyardReader().read(text, args.file)
    except InvalidShipyard as exc:
        for problem in exc.problems:
            print(problem.render(args.file), file=sys.stderr)
        return 1
    for warning in shipyard.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    print(graph.mermaid(shipyard), end="")
    return 0


def show_diagram(api: ApiClient, args: argparse.Namespace) -> int:
    print(api.diagram(args.project), end="")
    return 0


def control_sequence(api: ApiClient, args: argparse.Namespace) -> int:
    api.control(args.project, args.context, args.action, args.stage)
    done = {"pause": "paused", "resume": "resumed", "abort": "aborted"}[args.action]
    where = f" (stage {args.stage})" if args.stage else ""
    print(f"{done} {args.context}{where}")
    return 0


def rerun_sequence(api: ApiClient, args: argparse.Namespace) -> int:
    started = api.rerun(args.project, args.context, from_task=args.from_task, stage=args.stage)
    context = str(started["keptnContext"])
    print(context, flush=True)
    print(
        f"re-running {started['stage']}.{started['sequence']} from task"
        f" {started['fromTask']} (of {args.context})",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    return _watch(api, args.project, context, timeout=args.timeout, interval=args.poll_interval)


# ---------------------------------------------------------------------- output


def _line(event: Mapping[str, Any]) -> str:
    """``time  type  source  triggeredid  status/result``, with the type's prefix dropped."""
    data = event.get("data") or {}
    kind = str(event.get("type", "")).removeprefix(eventtypes.PREFIX)
    answered = str(event.get("triggeredid") or "")[:8] or "-"
    outcome = "/".join(str(data[key]) for key in ("status", "result") if data.get(key))
    return "  ".join(
        [
            str(event.get("time", "")),
            f"{kind:<40}",
            f"{event.get('source', '')!s:<24}",
            f"{answered:<8}",
            outcome,
        ]
    ).rstrip()


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_verdict(data: Mapping[str, Any]) -> None:
    """One row per objective, then the score, the result and the gate's message."""
    details = data.get("evaluation") or {}
    results = details.get("indicatorResults") or []
    if results:
        rows: list[tuple[str, ...]] = [
            ("OBJECTIVE", "VALUE", "COMPARED", "PASS", "WARNING", "STATUS", "SCORE")
        ]
        rows.extend(_row(item) for item in results if isinstance(item, Mapping))
        print_table(rows)
        print("(a target marked ! is violated)")
    score = details.get("score", 0)
    print(
        f"score {_number(score)}: {details.get('result') or data.get('result', '')}"
        f" (status {data.get('status', '')}, result {data.get('result', '')})"
    )
    if data.get("message"):
        print(str(data["message"]))


def _row(item: Mapping[str, Any]) -> tuple[str, ...]:
    value = item.get("value") or {}
    name = str(item.get("displayName") or value.get("metric") or "?")
    if value.get("success") is False:
        measured = f"- ({value.get('message', 'no value')})"
    else:
        measured = _number(value.get("value"))
    return (
        name,
        measured,
        _number(value.get("comparedValue")),
        _targets(item.get("passTargets")),
        _targets(item.get("warningTargets")),
        str(item.get("status", "")),
        _number(item.get("score")),
    )


def _targets(targets: object) -> str:
    if not isinstance(targets, list) or not targets:
        return "-"
    parts = []
    for target in targets:
        if not isinstance(target, Mapping):
            continue
        mark = "!" if target.get("violated") else ""
        parts.append(f"{target.get('criteria', '')}={_number(target.get('targetValue'))}{mark}")
    return " ".join(parts) or "-"


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return go_number(float(value))
