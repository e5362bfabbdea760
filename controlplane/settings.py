"""Configuration: one object, read from flags and ``CONTROLPLANE_*`` environment variables.

Only the entry points (``__main__`` and ``bootstrap``) read it; everything else receives
plain arguments. Each flag ``--nats-url`` has the variable ``CONTROLPLANE_NATS_URL``; a flag
given on the command line wins over the variable, which wins over the default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.domain.durations import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTROLPLANE_", extra="ignore")

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server with JetStream enabled."
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/controlplane",
        description="PostgreSQL DSN (asyncpg form). Migrations are applied on start.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP API.")
    sequences: Path = Field(
        Path("sequences"),
        description="Directory of shipyard files (*.yaml); each file's stem is a project.",
    )
    api_token: str | None = Field(
        None, description="When set, every /api call needs the header x-token with it."
    )
    public_url: str = Field(
        "",
        description="The address people and other systems reach the API at; task callback"
        " links start with it (default: http://<host>:<port>).",
    )
    callback_key: str | None = Field(
        None,
        description="Key that signs task callback links (at least 16 characters); by default"
        " one is made and kept in PostgreSQL, shared by every replica.",
        min_length=16,
    )
    task_started_timeout: float = Field(
        600.0,
        description="How long a triggered task may go unanswered before its sequence times"
        " out; a duration such as 10s, 5m or 1h (default 10m).",
    )
    stream: str = Field(
        "keptn", description="JetStream stream over sh.keptn.> (created if missing)."
    )
    consumer: str = Field("controlplane", description="Durable JetStream consumer of the engine.")
    data_dir: Path = Field(
        Path(".controlplane"),
        description="Where `controlplane up` keeps the embedded NATS and PostgreSQL data.",
    )
    local_nats_port: int = Field(
        4222,
        ge=0,
        le=65535,
        description="Port of the NATS server `controlplane up` starts (0 picks a free one).",
    )
    integration_ttl: float = Field(
        600.0,
        description="A registered integration that has not pinged for this long is removed"
        " with its subscriptions (a duration such as 10m).",
    )
    webhook_timeout: float = Field(
        5.0, description="How long a webhook receiver may take to answer one delivery."
    )
    webhook_attempts: int = Field(
        6, ge=1, description="Deliveries of one event to one webhook before giving up."
    )
    webhook_backoff: float = Field(
        1.0, description="Wait after the first failed delivery; doubles each time."
    )
    webhook_backoff_max: float = Field(60.0, description="The longest wait between deliveries.")
    webhook_consumer: str = Field(
        "webhooks", description="Durable JetStream consumer that drives webhook delivery."
    )
    builtin_evaluation: bool = Field(
        True,
        description="Answer evaluation/evaluate tasks with the built-in quality gate (turn"
        " off to leave them to an external service such as Keptn's lighthouse).",
    )
    prometheus_url: str = Field(
        "", description="Prometheus server for indicators whose sli.yaml names none."
    )
    evaluation_source_timeout: float = Field(
        10.0, description="How long one metric source may take to give a value."
    )
    evaluation_get_sli_timeout: float = Field(
        120.0, description="How long an external SLI provider may take to answer get-sli."
    )
    secrets_dir: Path | None = Field(
        None,
        description="Directory of secret files (a mounted Kubernetes Secret) that metric"
        " sources name; CONTROLPLANE_SECRET_<NAME> variables are read first.",
    )
    evaluation_consumer: str = Field(
        "evaluations", description="Durable JetStream consumer of the built-in quality gate."
    )
    batch_size: int = Field(512, ge=1, description="Most events the engine commits at once.")
    scheduler: bool = Field(
        True,
        description="Fire cron schedules (spec.schedules and API schedules) inside `serve`."
        " Safe next to any number of `controlplane scheduler` processes, which claim each"
        " slot in PostgreSQL; turn off to leave firing to them.",
    )
    api_url: str = Field(
        "http://127.0.0.1:8080",
        description="The control plane's HTTP API, as `controlplane operator` reaches it.",
    )
    operator_namespaces: str = Field(
        "",
        description="Namespaces whose Sequences `controlplane operator` watches, comma-separated"
        " exact names; empty watches every namespace.",
    )
    operator_liveness_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of the operator's liveness probe (GET /healthz); 0 turns it off.",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_format: str = Field("text", description="text (for people) or json (for collectors).")

    @field_validator(
        "task_started_timeout",
        "integration_ttl",
        "webhook_timeout",
        "webhook_backoff",
        "webhook_backoff_max",
        "evaluation_source_timeout",
        "evaluation_get_sli_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        if isinstance(value, int | float):
            return float(value)
        return parse_duration(str(value))

    @field_validator("log_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("log format must be text or json")
        return value
