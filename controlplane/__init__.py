"""An event-driven control plane that speaks Keptn v1's protocol."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
