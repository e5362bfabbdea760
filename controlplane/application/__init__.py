"""Orchestration around the pure core: the engine loop, definitions and read models."""

from __future__ import annotations
