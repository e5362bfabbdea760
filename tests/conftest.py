from __future__ import annotations

pytest_plugins = ["tests.fixtures_postgres", "tests.fixtures_nats"]
