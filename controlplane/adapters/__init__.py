"""Adapters: one subpackage per technology (PostgreSQL, NATS, HTTP), plus shipyard files."""

from __future__ import annotations
