"""The API's routes, one module per Keptn service it stands in for."""

from __future__ import annotations
