"""The Kubernetes operator: ``Sequence`` resources become the shipyards of their projects.

Modules, from pure to wired:

- :mod:`.assembly`: every Sequence of a project -> one Keptn shipyard, and what is wrong with
  each resource, with the words ``controlplane validate`` uses (pure, no I/O).
- :mod:`.status`: the ``status`` stanza a Sequence should show (pure).
- :mod:`.api`: the control plane's project endpoints over httpx.
- :mod:`.cluster`: the few Kubernetes calls kopf does not make for us (list, patch status).
- :mod:`.reconcile`: one reconciliation: list, assemble, apply, report.
- :mod:`.operator`: the kopf registry, its settings, and the ``controlplane operator`` run.
"""

from __future__ import annotations
