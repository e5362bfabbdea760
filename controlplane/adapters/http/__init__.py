"""The Keptn-compatible HTTP API: FastAPI routes over the engine, the definitions and queries.

Only :func:`create_app` is public; whoever runs the app (``bootstrap``) owns its lifespan.
"""

from __future__ import annotations

from controlplane.adapters.http.app import create_app

__all__ = ["create_app"]
