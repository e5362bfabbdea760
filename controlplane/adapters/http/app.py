"""The app factory: wire the routes to the engine, definitions and queries they are given.

Why a factory and no module-level app: tests build one per case against fakes, ``bootstrap``
builds the real one and owns its lifespan (start the engine, then serve), and nothing here
reads the environment.
"""

from __future__ import annotations

from fastapi import FastAPI

import controlplane
from controlplane.adapters.http import problems
from controlplane.adapters.http.auth import TokenCheck
from controlplane.adapters.http.routes import (
    callbacks,
    datastore,
    events,
    health,
    projects,
    reruns,
    resources,
    schedules,
    sequences,
    uniform,
)
from controlplane.adapters.http.services import (
    DefinitionsApi,
    EngineApi,
    ScheduleApi,
    Services,
    WatchApi,
)
from controlplane.application.callbacks import CallbackLinks
from controlplane.application.queries import Queries
from controlplane.application.registry import Registry
from controlplane.application.reruns import Reruns
from controlplane.application.resources import Resources

__all__ = ["DefinitionsApi", "EngineApi", "create_app"]

DESCRIPTION = (
    "Keptn v1 compatible control plane API. When an API token is configured, every /api"
    " path needs the header `x-token`."
)


def create_app(
    *,
    engine: EngineApi,
    definitions: DefinitionsApi,
    queries: Queries,
    registry: Registry,
    api_token: str | None,
    max_event_bytes: int = 65536,
    resource_files: Resources | None = None,
    watch: WatchApi | None = None,
    callback_links: CallbackLinks | None = None,
    rerun_service: Reruns | None = None,
    schedule_catalog: ScheduleApi | None = None,
) -> FastAPI:
    services = Services(
        engine,
        definitions,
        queries,
        registry,
        max_event_bytes,
        resource_files,
        watch,
        callbacks=callback_links,
        reruns=rerun_service,
        schedules=schedule_catalog,
    )
    app = FastAPI(
        title="controlplane",
        version=controlplane.__version__,
        description=DESCRIPTION,
        docs_url="/docs",
    )
    for module in (
        events,
        sequences,
        reruns,
        callbacks,
        datastore,
        projects,
        resources,
        schedules,
        uniform,
        health,
    ):
        app.include_router(module.router(services))
    problems.install(app)
    if api_token:
        app.add_middleware(TokenCheck, token=api_token)
    return app
