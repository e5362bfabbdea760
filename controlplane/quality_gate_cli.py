"""The quality-gate commands: ``controlplane evaluate`` and ``controlplane resource``.

``evaluate`` asks the API to run a stage's ``evaluation`` sequence for one service, waits for
its ``evaluation.finished`` and prints one row per objective (value, compared value,
targets, status, score) and the total, so a CI job can gate on the exit code: 0 for pass or
warning, 1 for fail. ``resource`` uploads and reads the ``slo.yaml`` and ``sli.yaml`` files
the gate uses, at project, stage or service level.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from controlplane import cli
from controlplane.domain import durations

_FINISHED = ("sh.keptn.event.evaluation.finished", "sh.keptn.event.evaluate.finished")


def add_commands(subparsers: Any) -> None:
    evaluate = cli.client_parser(
        subparsers, "evaluate", "run a quality gate for a service and print its verdict"
    )
    evaluate.add_argument("project")
    evaluate.add_argument("stage")
    evaluate.add_argument("service")
    evaluate.add_argument("--timeframe", default="", help="window length ending now (e.g. 5m)")
    evaluate.add_argument("--start", default="", help="window start (RFC 3339)")
    evaluate.add_argument("--end", default="", help="window end (with --start)")
    evaluate.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    evaluate.add_argument(
        "--no-wait", action="store_true", help="print the keptnContext and return at once"
    )
    evaluate.add_argument(
        "--timeout", default="5m", help="how long to wait for the verdict (default 5m)"
    )
    evaluate.add_argument("--poll-interval", type=float, default=0.2, help=argparse.SUPPRESS)
    evaluate.set_defaults(func=cli.client_handler(run_evaluation))

    resource = cli.client_parser(
        subparsers, "resource", "upload or show configuration files (slo.yaml, sli.yaml)"
    )
    resource.add_argument("action", choices=("put", "get"))
    resource.add_argument("project")
    resource.add_argument(
        "files", nargs="+", metavar="FILE", help="put: local files; get: resource URIs"
    )
    resource.add_argument("--stage", default="", help="stage level (default: project level)")
    resource.add_argument("--service", default="", help="service level (needs --stage)")
    resource.add_argument(
        "--uri", default="", help="put one file under this URI instead of its file name"
    )
    resource.set_defaults(func=cli.client_handler(run_resource))


# ---------------------------------------------------------------------- evaluate


def run_evaluation(api: cli.ApiClient, args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for text in args.label:
        key, equals, value = text.partition("=")
        if not equals or not key:
            _error(f"labels read KEY=VALUE, got {text!r}")
            return 2
        labels[key] = value
    try:
        timeout = durations.parse_duration(args.timeout)
    except ValueError as exc:
        _error(f"--timeout: {exc}")
        return 2
    request = {
        key: value
        for key, value in (("start", args.start), ("end", args.end), ("timeframe", args.timeframe))
        if value
    }
    request["labels"] = labels
    context = api.trigger_evaluation(args.project, args.stage, args.service, request)
    print(context, flush=True)
    if args.no_wait:
        return 0
    finished = _await_verdict(api, args.project, context, timeout, args.poll_interval)
    if finished is None:
        _error(
            f"no verdict after {durations.format_duration(timeout)} (keptnContext {context});"
            " is a quality gate answering evaluation tasks?"
        )
        return 1
    data = finished.get("data") or {}
    cli.print_verdict(data)
    return 0 if data.get("result") in ("pass", "warning") else 1


def _await_verdict(
    api: cli.ApiClient, project: str, context: str, timeout: float, interval: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        for event in api.events(context, project=project):
            if event.get("type") in _FINISHED:
                return event
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------- resource


def run_resource(api: cli.ApiClient, args: argparse.Namespace) -> int:
    if args.service and not args.stage:
        _error("--service needs --stage")
        return 2
    level = f"/project/{cli.quote_segment(args.project)}"
    if args.stage:
        level += f"/stage/{cli.quote_segment(args.stage)}"
    if args.service:
        level += f"/service/{cli.quote_segment(args.service)}"
    if args.action == "get":
        for uri in args.files:
            sys.stdout.write(api.get_resource(level, uri).decode("utf-8", "replace"))
        return 0
    if args.uri and len(args.files) != 1:
        _error("--uri names one file; give exactly one")
        return 2
    files: dict[str, bytes] = {}
    for name in args.files:
        path = Path(name)
        try:
            files[args.uri or path.name] = path.read_bytes()
        except OSError as exc:
            _error(f"{name}: cannot read the file: {exc.strerror or exc}")
            return 2
    version = api.put_resources(level, files)
    print(f"stored {', '.join(files)} (version {version})")
    return 0


def _error(message: str) -> None:
    print(f"controlplane: {message}", file=sys.stderr)
