"""The ``controlplane`` command: server roles (up, serve, migrate) and client commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from controlplane import __version__, bootstrap, cli, logs, quality_gate_cli
from controlplane.settings import Settings

_SERVER_FLAGS: tuple[tuple[str, str], ...] = (
    ("--nats-url", "NATS server URL (CONTROLPLANE_NATS_URL)"),
    ("--database-url", "PostgreSQL DSN (CONTROLPLANE_DATABASE_URL)"),
    ("--host", "HTTP listen address (CONTROLPLANE_HOST, default 127.0.0.1)"),
    ("--port", "HTTP port (CONTROLPLANE_PORT, default 8080)"),
    ("--sequences", "directory of shipyard files (CONTROLPLANE_SEQUENCES, default sequences/)"),
    ("--api-token", "require this x-token on /api calls (CONTROLPLANE_API_TOKEN)"),
    ("--public-url", "address callback links start with (CONTROLPLANE_PUBLIC_URL)"),
    ("--callback-key", "key signing callback links (CONTROLPLANE_CALLBACK_KEY; default: stored)"),
    ("--task-started-timeout", "e.g. 30s, 10m (CONTROLPLANE_TASK_STARTED_TIMEOUT, default 10m)"),
    ("--stream", "JetStream stream name (CONTROLPLANE_STREAM, default keptn)"),
    (
        "--integration-ttl",
        "remove integrations silent this long (CONTROLPLANE_INTEGRATION_TTL, default 10m)",
    ),
    ("--webhook-timeout", "per webhook delivery (CONTROLPLANE_WEBHOOK_TIMEOUT, default 5s)"),
    ("--webhook-attempts", "deliveries before giving up (CONTROLPLANE_WEBHOOK_ATTEMPTS, 6)"),
    ("--webhook-backoff", "first retry wait, doubling (CONTROLPLANE_WEBHOOK_BACKOFF, 1s)"),
    ("--webhook-backoff-max", "longest retry wait (CONTROLPLANE_WEBHOOK_BACKOFF_MAX, 1m)"),
    ("--prometheus-url", "default Prometheus for quality gates (CONTROLPLANE_PROMETHEUS_URL)"),
    (
        "--evaluation-source-timeout",
        "time limit per metric source (CONTROLPLANE_EVALUATION_SOURCE_TIMEOUT, default 10s)",
    ),
    (
        "--evaluation-get-sli-timeout",
        "wait for an SLI provider (CONTROLPLANE_EVALUATION_GET_SLI_TIMEOUT, default 2m)",
    ),
    ("--secrets-dir", "directory of secret files for metric sources (CONTROLPLANE_SECRETS_DIR)"),
    ("--log-level", "debug, info, warning, error (CONTROLPLANE_LOG_LEVEL)"),
    ("--log-format", "text or json (CONTROLPLANE_LOG_FORMAT)"),
)


def _server_parser(subparsers: Any, name: str, help_text: str, flags: Sequence[str]) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    for flag, text in _SERVER_FLAGS:
        if flag in flags:
            parser.add_argument(flag, default=None, help=text)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlplane",
        description="An event-driven control plane that speaks Keptn v1's protocol.",
    )
    parser.add_argument("--version", action="version", version=f"controlplane {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    all_flags = [flag for flag, _ in _SERVER_FLAGS]
    up = _server_parser(
        subparsers,
        "up",
        "start embedded NATS and PostgreSQL and the control plane with the example sequences",
        [f for f in all_flags if f not in ("--nats-url", "--database-url")],
    )
    up.add_argument(
        "--local-nats-port",
        default=None,
        help="port of the embedded NATS server (default 4222; 0 picks a free one)",
    )
    up.add_argument(
        "--data-dir",
        default=None,
        help="where NATS and PostgreSQL keep their data (default .controlplane/)",
    )
    up.add_argument(
        "--no-examples",
        action="store_true",
        help="do not start the example task services (checknumber)",
    )
    up.set_defaults(role="up")
    serve = _server_parser(
        subparsers, "serve", "run the control plane against external NATS and PostgreSQL", all_flags
    )
    serve.set_defaults(role="serve")
    for parser_with_timer in (up, serve):
        parser_with_timer.add_argument(
            "--no-scheduler",
            dest="scheduler",
            action="store_const",
            const=False,
            default=None,
            help="do not fire cron schedules in this process (CONTROLPLANE_SCHEDULER=false)",
        )
    _server_parser(
        subparsers,
        "scheduler",
        "fire cron schedules only (run as many as you like next to serve)",
        ["--nats-url", "--database-url", "--stream", "--log-level", "--log-format"],
    ).set_defaults(role="scheduler")
    _server_parser(
        subparsers,
        "migrate",
        "apply database migrations and exit",
        ["--database-url", "--log-level", "--log-format"],
    ).set_defaults(role="migrate")
    operator = _server_parser(
        subparsers,
        "operator",
        "run the Kubernetes operator: Sequence resources become project shipyards",
        ["--log-level", "--log-format"],
    )
    operator.add_argument(
        "--api-url", default=None, help="the control plane's API (CONTROLPLANE_API_URL)"
    )
    operator.add_argument(
        "--api-token", default=None, help="sent as x-token (CONTROLPLANE_API_TOKEN)"
    )
    operator.add_argument(
        "--namespaces",
        dest="operator_namespaces",
        metavar="NAMES",
        default=None,
        help="watch these, comma-separated (CONTROLPLANE_OPERATOR_NAMESPACES, default all)",
    )
    operator.add_argument(
        "--liveness-port",
        dest="operator_liveness_port",
        metavar="PORT",
        default=None,
        help="GET /healthz on this port (CONTROLPLANE_OPERATOR_LIVENESS_PORT, default 8081)",
    )
    operator.set_defaults(role="operator")
    examples = _server_parser(
        subparsers,
        "examples",
        "serve the example task services (checknumber, extract-metadata, geolookup) over NATS",
        ["--nats-url", "--api-token", "--log-level", "--log-format"],
    )
    examples.add_argument(
        "--api-url",
        default=None,
        help="register with the control plane's API (CONTROLPLANE_API_URL)",
    )
    examples.set_defaults(role="examples")
    cli.add_client_commands(subparsers)
    quality_gate_cli.add_commands(subparsers)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    given = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in Settings.model_fields
    }
    return Settings(**given)


def _run(main_coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop (part of uvicorn[standard]) when it is there: it is markedly faster."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main_coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main_coroutine)


def _operator(settings: Settings) -> Coroutine[Any, Any, int]:
    # Imported here: kopf (with aiohttp) would add a third of a second to every other command.
    from controlplane.adapters.kubernetes import operator

    return operator.run(
        api_url=settings.api_url,
        api_token=settings.api_token,
        namespaces=operator.parse_namespaces(settings.operator_namespaces),
        liveness_port=settings.operator_liveness_port or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    role = getattr(args, "role", None)
    if role is None:
        try:
            result: int = args.func(args)
        except BrokenPipeError:  # `controlplane events ... | head`
            sys.stderr.close()
            return 0
        return result
    try:
        settings = _settings(args)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            print(f"controlplane: invalid {field}: {error['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if role == "up":
            return _run(bootstrap.up(settings, examples=not args.no_examples))
        if role == "serve":
            return _run(bootstrap.serve(settings))
        if role == "scheduler":
            return _run(bootstrap.schedule(settings))
        if role == "operator":
            return _run(_operator(settings))
        if role == "examples":
            return bootstrap.examples(settings)
        return _run(bootstrap.migrate(settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a start-up failure: say what, not a traceback
        logging.getLogger("controlplane").debug("startup.failed", exc_info=True)
        print(f"controlplane {role}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
