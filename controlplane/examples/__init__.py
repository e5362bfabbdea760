"""Example task services that `controlplane up` runs next to the local control plane.

They exist so the README's example works on a fresh machine; each is an ordinary task
service written with the task SDK (``tasksdk``) and connects over NATS like any other.
"""

from __future__ import annotations
