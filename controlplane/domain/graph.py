"""The ``triggeredOn`` links of a shipyard as a graph: what they name, where they loop, a picture.

Each sequence is a node, ``(stage, sequence)``, and each ``triggeredOn`` entry an edge from the
sequence whose ``.finished`` it waits for to the sequence that carries it. Three questions are
asked of that graph, all without I/O so that ``controlplane validate``, the API and the
Kubernetes operator give the same answers:

- **Dangling links.** A link to a stage or sequence the shipyard does not define can never
  fire. Keptn accepted it and stayed silent; it is nearly always a typo, so it is a problem
  with the link's field path. Every stage's implicit ``evaluation`` sequence is a target.
- **Cycles.** Sequences that trigger each other run for as long as their selectors keep
  matching, possibly for ever. That is how Keptn's remediation loop works, so a cycle is only
  a warning, and none at all when a sequence on it says ``loop: true``. Each cycle without such
  a sequence is reported once, as one representative path (``dev.a → dev.b → dev.a``).
- **A diagram.** :func:`mermaid` draws stages, sequences, their tasks and the links as a
  Mermaid flowchart, the same text for the same shipyard.

``shipyard`` imports this module only when it checks a parsed shipyard, so this one may
import ``shipyard`` at the top without an import cycle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controlplane.domain.errors import Problem
from controlplane.domain.shipyard import EVALUATION

if TYPE_CHECKING:
    from controlplane.domain.shipyard import Sequence, Shipyard, Stage, Trigger

Node = tuple[str, str]  # (stage, sequence)

DEFAULT_SELECTOR = "pass|warning"
ARROW = " → "


@dataclass(frozen=True, slots=True)
class Link:
    """One ``triggeredOn`` entry: ``target`` starts when ``source`` finishes."""

    source: Node
    target: Node
    trigger: Trigger
    path: str  # its ``event`` field: spec.stages[i].sequences[j].triggeredOn[k].event


@dataclass(frozen=True, slots=True)
class Cycle:
    """A loop of links that no sequence declared as intended, with one link to blame."""

    nodes: tuple[Node, ...]  # the first node again at the end: (a, b, a)
    path: str  # the field path of the link that closes the loop

    @property
    def text(self) -> str:
        return ARROW.join(f"{stage}.{sequence}" for stage, sequence in self.nodes)

    @property
    def message(self) -> str:
        return (
            f"triggeredOn links form a loop, {self.text}, which runs again for as long as its"
            " selectors match; if that is intended, mark a sequence on it with 'loop: true'"
        )


# ---------------------------------------------------------------------- links


def links(stages: Iterable[Stage]) -> list[Link]:
    """Every ``triggeredOn`` entry, in shipyard order, whether or not its source exists."""
    found: list[Link] = []
    for s_index, stage in enumerate(stages):
        for q_index, sequence in enumerate(stage.sequences):
            for t_index, trigger in enumerate(sequence.triggered_on):
                path = f"spec.stages[{s_index}].sequences[{q_index}].triggeredOn[{t_index}].event"
                found.append(
                    Link(
                        (trigger.stage, trigger.sequence),
                        (stage.name, sequence.name),
                        trigger,
                        path,
                    )
                )
    return found


def dangling_links(stages: Iterable[Stage]) -> list[Problem]:
    """A problem for each link whose source stage or sequence the shipyard does not define."""
    stages = tuple(stages)
    problems: list[Problem] = []
    for link in links(stages):
        stage_name, sequence_name = link.source
        stage = _stage(stages, stage_name)
        if stage is None:
            missing = f"stage {stage_name!r} is not defined in the shipyard"
        elif stage.sequence(sequence_name) is None:
            missing = f"sequence {sequence_name!r} is not defined in stage {stage_name!r}"
        else:
            continue
        problems.append(Problem(link.path, f"{link.trigger.event!r} can never fire: {missing}"))
    return problems


# ---------------------------------------------------------------------- cycles


def unintended_cycles(stages: Iterable[Stage]) -> list[Cycle]:
    """One representative cycle per loop of links that passes through no ``loop: true`` sequence.

    A cycle is excused when any sequence on it says ``loop: true``, so the loops left to report
    are exactly the cycles of the graph without those sequences: one per strongly connected
    component that has a cycle (two or more sequences, or one that triggers itself).
    """
    stages = tuple(stages)
    graph = _Graph(stages)
    intended = {node for node, sequence in graph.sequences.items() if sequence.loop}
    nodes = [node for node in graph.nodes if node not in intended]
    edges = {
        node: [target for target in graph.edges[node] if target not in intended] for node in nodes
    }
    cycles: list[Cycle] = []
    for component in _components(nodes, edges):
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in edges[start]:
            continue
        loop = _shortest_cycle(start, edges, members)
        cycles.append(Cycle(tuple(loop), graph.first_link(loop[-2], start).path))
    return cycles


class _Graph:
    """Nodes in shipyard order (implicit ``evaluation`` nodes only where a link names them)."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.sequences: dict[Node, Sequence] = {}
        for stage in stages:
            for sequence in stage.sequences:
                self.sequences.setdefault((stage.name, sequence.name), sequence)
        self.links = [link for link in links(stages) if self._known(stages, link.source)]
        for link in self.links:
            if link.source not in self.sequences:  # an implicit evaluation sequence
                home = _stage(stages, link.source[0])
                found = home.sequence(link.source[1]) if home else None
                if found is not None:
                    self.sequences[link.source] = found
        order = {stage.name: index for index, stage in reversed(list(enumerate(stages)))}
        self.nodes = sorted(self.sequences, key=lambda node: order[node[0]])
        self.edges: dict[Node, list[Node]] = {node: [] for node in self.nodes}
        for link in self.links:
            if link.target not in self.edges[link.source]:
                self.edges[link.source].append(link.target)

    @staticmethod
    def _known(stages: tuple[Stage, ...], node: Node) -> bool:
        stage = _stage(stages, node[0])
        return stage is not None and stage.sequence(node[1]) is not None

    def first_link(self, source: Node, target: Node) -> Link:
        return next(link for link in self.links if (link.source, link.target) == (source, target))


def _components(nodes: list[Node], edges: Mapping[Node, list[Node]]) -> list[list[Node]]:
    """Tarjan's strongly connected components, without recursion; each in ``nodes`` order.

    The components come out ordered by their first node, so reports are in shipyard order.
    """
    position = {node: index for index, node in enumerate(nodes)}
    index: dict[Node, int] = {}
    low: dict[Node, int] = {}
    on_stack: set[Node] = set()
    stack: list[Node] = []
    found: list[list[Node]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[Node, int]] = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            if next_edge < len(successors):
                work.append((node, next_edge + 1))
                successor = successors[next_edge]
                if successor not in index:
                    work.append((successor, 0))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            if low[node] == index[node]:
                component: list[Node] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component, key=position.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(found, key=lambda component: position[component[0]])


def _shortest_cycle(
    start: Node, edges: Mapping[Node, list[Node]], members: set[Node]
) -> list[Node]:
    """The shortest way from ``start`` back to itself inside one component (breadth first)."""
    came_from: dict[Node, Node] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in edges[node]:
            if successor == start:
                back = [node]
                while back[-1] != start:
                    back.append(came_from[back[-1]])
                return [*reversed(back), start]
            if successor in members and successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    raise AssertionError("a strongly connected component with a cycle has a way back")


# ---------------------------------------------------------------------- diagram


def mermaid(shipyard: Shipyard) -> str:
    """A Mermaid flowchart: a box per stage, a node per sequence with its tasks, links as arrows.

    Stages read left to right in shipyard order. An arrow runs from the sequence that finishes
    to the one it starts, labelled with what starts it (``pass|warning`` without a selector);
    arrows on a loop are dashed. A stage's implicit ``evaluation`` sequence is drawn, rounded,
    only where a link starts from it or the stage has no sequence of its own. Ids are made from
    positions, never from names, and every name is escaped, so any shipyard gives valid Mermaid.
    """
    graph = _Graph(shipyard.stages)
    ids: dict[Node, str] = {}
    lines = ["flowchart LR"]
    for s_index, stage in enumerate(shipyard.stages):
        if _stage(shipyard.stages, stage.name) is not stage:
            continue  # a repeated stage name: the first one is the stage
        lines.append(f'  subgraph s{s_index}["{_escape(stage.name)}"]')
        drawn = 0
        for q_index, sequence in enumerate(stage.sequences):
            node = (stage.name, sequence.name)
            if node in ids:
                continue
            ids[node] = f"s{s_index}_q{q_index}"
            lines.append(f'    {ids[node]}["{_sequence_label(sequence)}"]')
            drawn += 1
        implicit = (stage.name, EVALUATION)
        if implicit not in ids and (graph.edges.get(implicit) or not drawn):
            ids[implicit] = f"s{s_index}_implicit"
            lines.append(f'    {ids[implicit]}(["{EVALUATION}<br/>(built in)"])')
        lines.append("  end")
    looping = _looping_edges(graph)
    for (source, target), labels in _edge_labels(graph).items():
        if source not in ids or target not in ids:
            continue
        arrow = "-.->" if (source, target) in looping else "-->"
        text = _escape(" or ".join(labels))
        lines.append(f'  {ids[source]} {arrow}|"{text}"| {ids[target]}')
    return "\n".join(lines) + "\n"


def selector_label(trigger: Trigger) -> str:
    """What starts the link, as Keptn's selector rule reads it."""
    if trigger.match is None:
        return DEFAULT_SELECTOR
    counted = [
        f"{key}: {value}"
        for key, value in trigger.match.items()
        if key == "result" or key.endswith(".result")
    ]
    return " or ".join(counted) if counted else "never (match names no result)"


def _sequence_label(sequence: Sequence) -> str:
    name = _escape(sequence.name) + (" (loop)" if sequence.loop else "")
    tasks = ARROW.join(_escape(task.name) for task in sequence.tasks) or "(no tasks)"
    return f"{name}<br/>{tasks}"


def _edge_labels(graph: _Graph) -> dict[tuple[Node, Node], list[str]]:
    labels: dict[tuple[Node, Node], list[str]] = {}
    for link in graph.links:
        texts = labels.setdefault((link.source, link.target), [])
        label = selector_label(link.trigger)
        if label not in texts:
            texts.append(label)
    return labels


def _looping_edges(graph: _Graph) -> set[tuple[Node, Node]]:
    """Edges inside a strongly connected component, that is on some cycle."""
    component_of: dict[Node, int] = {}
    for number, component in enumerate(_components(graph.nodes, graph.edges)):
        for node in component:
            component_of[node] = number
    return {
        (source, target)
        for source in graph.nodes
        for target in graph.edges[source]
        if component_of[source] == component_of[target]
    }


# Characters that would end a quoted Mermaid label, start an entity or become HTML; Mermaid
# reads ``#<code>;`` as the character with that code.
_UNSAFE = {char: f"#{ord(char)};" for char in '"#&<>`'}


def _escape(text: str) -> str:
    escaped = "".join(_UNSAFE.get(char, char) for char in text)
    return " ".join(escaped.split())  # a line break in a label would end the statement


def _stage(stages: tuple[Stage, ...], name: str) -> Stage | None:
    return next((stage for stage in stages if stage.name == name), None)
