"""The pure core: shipyards, sequence executions and the rules that move them.

Nothing in this package performs I/O, reads the clock, logs or imports a framework;
import-linter enforces that. Time comes in as an argument, effects go out as commands.
"""

from __future__ import annotations
