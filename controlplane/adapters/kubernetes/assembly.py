"""Sequence resources -> one Keptn shipyard per project, and a verdict on every resource.

A ``Sequence`` resource declares one sequence of one stage of one project. The control plane
knows projects only as whole shipyards, so the operator gathers every Sequence of a project
and writes them out as one shipyard. This module does that without any I/O, so the rules can
be tested exhaustively and read in one place:

- **Order.** Stages are ordered by their ``triggeredOn`` links (a stage comes after the stages
  whose sequences start it), ties and cycles broken by name; the sequences of a stage by
  name. The same resources always give the same text, so an unchanged set of resources never
  makes a new shipyard version.
- **Validation.** Each resource's sequence is checked with
  :func:`controlplane.domain.shipyard.parse_shipyard`, the function behind ``controlplane
  validate``, and every problem comes back with validate's own message, its field path turned
  into the resource's (``spec.stages[0].sequences[1].tasks[0].name`` -> ``spec.tasks[0].name``).
  A ``triggeredOn`` is checked against the whole project: naming a sequence no resource
  declares makes the resource that carries it invalid, and a loop of triggers that no sequence
  on it declares (``loop: true``) is a warning on the resource whose trigger closes it. On top
  of what validate refuses, two resources may not declare the same (stage, sequence): the
  younger one (by ``creationTimestamp``, then namespace and name) is invalid.
- **Invalid resources never break a project.** A resource whose current spec is invalid stands
  in its project with its *last valid spec* (which the operator keeps in the annotation
  :data:`LAST_VALID_ANNOTATION`), or not at all if it never had one. So an invalid update
  leaves the running definition exactly as it was, and the resource's status says why.

Validity depends on the other resources (a duplicate, a missing target), and falling back to
a last valid spec can create or remove such a conflict, so the verdicts are computed to a fixed
point: each round demotes every resource found at fault one step (current spec -> last valid
spec -> nothing) until a round finds nothing. Each resource can be demoted at most twice, so
this ends.
"""

from __future__ import annotations

import copy
import heapq
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.domain.errors import InvalidShipyard, Problem
from controlplane.domain.shipyard import NAME_RULE, parse_shipyard

API_VERSION = "spec.keptn.sh/0.2.4"
KIND = "Shipyard"
# The mark the operator puts in the shipyards it writes: only those projects are its own to
# replace and delete. Keptn's format carries unknown metadata untouched.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "controlplane-operator"
# Where the operator keeps a resource's last spec that was valid and applied (as JSON).
LAST_VALID_ANNOTATION = "controlplane.dev/last-valid-spec"
PROJECT_NAME_MAX = 200

JsonMap = Mapping[str, Any]
ResourceKey = tuple[str, str]  # (namespace, name)

_ASSEMBLED_PATH = re.compile(r"^spec\.stages\[(\d+)\](?:\.sequences\[(\d+)\])?(.*)$")
_TRIGGER_PATH = re.compile(r"\.triggeredOn\[\d+\]\.event$")
# Optional keys of a sequence and of a task carried into the shipyard as they are; the shipyard
# parser checks them, and reports problems at the resource's own field path.
SEQUENCE_KEYS = ("timeout", "concurrency", "loop")
TASK_KEYS = ("triggeredAfter", "properties", "timeout", "retry", "pauseAfterErrors", "callback")


@dataclass(frozen=True, slots=True)
class Declaration:
    """What one resource puts into its project's shipyard: one sequence of one stage."""

    project: str
    stage: str
    sequence: str
    entry: JsonMap  # the shipyard's mapping for the sequence: name, triggeredOn, tasks
    name_field: str  # where the sequence's name came from: spec.name or metadata.name

    def as_spec(self) -> dict[str, Any]:
        """The spec that declares exactly this; what the last-valid annotation stores."""
        spec: dict[str, Any] = {"project": self.project, "stage": self.stage}
        spec.update(copy.deepcopy(dict(self.entry)))
        return spec

    def field(self, assembled_rest: str) -> str:
        """The resource's field path for what follows ``...sequences[j]`` in a shipyard path."""
        if assembled_rest == ".name":
            return self.name_field
        return f"spec{assembled_rest}"


@dataclass(frozen=True, slots=True)
class SequenceResource:
    """The parts of a ``Sequence`` object the operator reads."""

    namespace: str
    name: str
    created: str  # metadata.creationTimestamp, RFC 3339: sorts as text
    generation: int | None
    spec: JsonMap
    status: JsonMap
    last_valid: JsonMap | None
    deleting: bool

    @property
    def key(self) -> ResourceKey:
        return (self.namespace, self.name)

    @property
    def title(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def from_body(cls, body: JsonMap) -> SequenceResource:
        metadata = _mapping(body.get("metadata"))
        annotations = _mapping(metadata.get("annotations"))
        generation = metadata.get("generation")
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            created=str(metadata.get("creationTimestamp") or ""),
            generation=generation if isinstance(generation, int) else None,
            spec=_mapping(body.get("spec")),
            status=_mapping(body.get("status")),
            last_valid=_last_valid(annotations.get(LAST_VALID_ANNOTATION)),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    def projects(self) -> set[str]:
        """Every project this resource names now or was applied to before."""
        found = {self.spec.get("project"), self.status.get("project")}
        if self.last_valid is not None:
            found.add(self.last_valid.get("project"))
        return {project for project in found if isinstance(project, str) and project}


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one resource fares: its problems, warnings, and what stands for it in a shipyard."""

    problems: tuple[str, ...]  # empty: the current spec is applied as it is
    warnings: tuple[str, ...]
    applied: Declaration | None  # the current spec, the last valid spec, or nothing

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Assembly:
    """The shipyard of every project that has at least one applied resource, and all verdicts."""

    shipyards: Mapping[str, JsonMap]
    verdicts: Mapping[ResourceKey, Verdict]


def assemble(resources: Iterable[SequenceResource]) -> Assembly:
    """Assemble every project's shipyard from ``resources`` (those being deleted are left out)."""
    live = sorted((r for r in resources if not r.deleting), key=_age)
    problems: dict[ResourceKey, list[str]] = {}
    options = {resource.key: _options(resource, problems) for resource in live}
    chosen = dict.fromkeys(options, 0)  # index into options; past the end: left out
    checked: dict[tuple[ResourceKey, int], tuple[list[str], list[str]]] = {}
    while True:
        active = {key: options[key][i] for key, i in chosen.items() if i < len(options[key])}
        for key, declaration in active.items():
            if (key, chosen[key]) not in checked:
                checked[key, chosen[key]] = _local_problems(declaration)
        found = {
            key: checked[key, chosen[key]][0] for key in active if checked[key, chosen[key]][0]
        }
        found = found or _duplicates(active, live) or _project_problems(active)
        if not found:
            break
        for key, messages in found.items():
            problems.setdefault(key, messages)  # the first problems are those of the current spec
            chosen[key] += 1
    loops = _project_warnings(active)
    return Assembly(
        shipyards=_shipyards(active),
        verdicts={
            resource.key: Verdict(
                problems=tuple(problems.get(resource.key, ())),
                warnings=()
                if resource.key in problems
                else (*checked[resource.key, 0][1], *loops.get(resource.key, ())),
                applied=active.get(resource.key),
            )
            for resource in live
        },
    )


def _options(
    resource: SequenceResource, problems: dict[ResourceKey, list[str]]
) -> list[Declaration]:
    """What can stand for ``resource``, best first: its current spec, then its last valid one."""
    options: list[Declaration] = []
    current = declare(resource.spec, resource.name)
    if isinstance(current, Declaration):
        options.append(current)
    else:
        problems[resource.key] = current
    if resource.last_valid is not None:
        fallback = declare(resource.last_valid, resource.name)
        if isinstance(fallback, Declaration):
            options.append(fallback)
    return options


def declare(spec: JsonMap, default_name: str) -> Declaration | list[str]:
    """Read one spec; a list of problems when it does not even say where it belongs."""
    project = spec.get("project")
    stage = spec.get("stage")
    problems: list[str] = []
    if not isinstance(project, str) or not project:
        problems.append("spec.project: every Sequence needs the name of its project")
    elif len(project) > PROJECT_NAME_MAX or not NAME_RULE.fullmatch(project):
        problems.append(
            f"spec.project: project name {project!r} must be 1 to {PROJECT_NAME_MAX} lowercase"
            " letters, digits and dashes, start with a letter and not end with a dash"
        )
    if not isinstance(stage, str) or not stage:
        # The words validate uses for a stage without a name.
        problems.append("spec.stage: every stage needs a non-empty name")
    if problems or not isinstance(project, str) or not isinstance(stage, str):
        return problems
    named = spec.get("name") is not None
    name_field = "spec.name" if named else "metadata.name"
    name = spec["name"] if named else default_name
    entry: dict[str, Any] = {"name": name}
    triggers = spec.get("triggeredOn")
    if isinstance(triggers, list):
        if triggers:
            entry["triggeredOn"] = [_trigger(item) for item in triggers]
    elif triggers is not None:
        entry["triggeredOn"] = copy.deepcopy(triggers)
    tasks = spec.get("tasks")
    if isinstance(tasks, list):
        entry["tasks"] = [_task(item) for item in tasks]
    elif tasks is not None:
        entry["tasks"] = copy.deepcopy(tasks)
    for optional in SEQUENCE_KEYS:
        if spec.get(optional) is not None:
            entry[optional] = copy.deepcopy(spec[optional])
    sequence = name if isinstance(name, str) else ""
    return Declaration(project, stage, sequence, entry, name_field)


def managed_by_operator(document: object) -> bool:
    """Whether a shipyard (as parsed from YAML) carries the operator's mark."""
    if not isinstance(document, Mapping):
        return False
    labels = _mapping(_mapping(document.get("metadata")).get("labels"))
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def shipyard_document(project: str, declarations: Iterable[Declaration]) -> dict[str, Any]:
    """The shipyard of ``project`` holding ``declarations``, in the canonical order."""
    document, _ = _layout(project, list(declarations))
    return document


# ---------------------------------------------------------------------- reading specs


def _trigger(item: object) -> object:
    if not isinstance(item, Mapping):
        return copy.deepcopy(item)  # parse_shipyard says what is wrong with it
    trigger: dict[str, Any] = {"event": item.get("event")}
    if item.get("selector") is not None:
        trigger["selector"] = copy.deepcopy(item["selector"])
    return trigger


def _task(item: object) -> object:
    if not isinstance(item, Mapping):
        return copy.deepcopy(item)
    task: dict[str, Any] = {"name": item.get("name")}
    for optional in TASK_KEYS:
        if item.get(optional) is not None:
            task[optional] = copy.deepcopy(item[optional])
    return task


def _last_valid(raw: object) -> JsonMap | None:
    # The operator wrote it; anything else (edited by hand, cut short) is ignored.
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


def _mapping(value: object) -> JsonMap:
    return value if isinstance(value, Mapping) else {}


def _age(resource: SequenceResource) -> tuple[str, str, str]:
    return (resource.created, resource.namespace, resource.name)


# ---------------------------------------------------------------------- the three checks


def _local_problems(declaration: Declaration) -> tuple[list[str], list[str]]:
    """Problems and warnings of one declaration on its own.

    It is parsed in a shipyard of its own, where an empty sequence stands in for each sequence
    its triggers name: whether those exist, and whether the triggers loop, are questions about
    the whole project (:func:`_project_problems`, :func:`_project_warnings`).
    """
    members = [declaration, *_stand_ins(declaration)]
    document, positions = _layout(declaration.project, members)
    try:
        shipyard = parse_shipyard(document)
    except InvalidShipyard as exc:
        return _own(declaration, exc.problems, positions), []
    warnings: list[Problem] = []
    for warning in shipyard.warnings:
        path, _, message = warning.partition(": ")
        if not _TRIGGER_PATH.search(path):
            warnings.append(Problem(path, message))
    return [], _own(declaration, warnings, positions)


def _stand_ins(declaration: Declaration) -> list[Declaration]:
    """An empty sequence for every other (stage, sequence) the declaration's triggers name."""
    triggers = declaration.entry.get("triggeredOn")
    seen = {(declaration.stage, declaration.sequence)}
    stand_ins: list[Declaration] = []
    for trigger in triggers if isinstance(triggers, list) else ():
        event = trigger.get("event") if isinstance(trigger, Mapping) else None
        parts = event.split(".") if isinstance(event, str) else []
        if len(parts) != 3 or not all(parts) or (parts[0], parts[1]) in seen:
            continue  # a malformed event is the declaration's own problem
        seen.add((parts[0], parts[1]))
        stand_ins.append(
            Declaration(declaration.project, parts[0], parts[1], {"name": parts[1]}, "spec.name")
        )
    return stand_ins


def _own(
    declaration: Declaration, problems: Iterable[Problem], positions: list[list[Declaration]]
) -> list[str]:
    """The messages about ``declaration`` (not its stand-ins), at its own field paths."""
    messages: list[str] = []
    for problem in problems:
        for blamed, field in _blame(problem.path, positions):
            if blamed is declaration:
                messages.append(f"{field}: {problem.message}")
                break
    return messages


def _duplicates(
    active: Mapping[ResourceKey, Declaration], oldest_first: list[SequenceResource]
) -> dict[ResourceKey, list[str]]:
    """The younger resources that declare a (project, stage, sequence) already declared."""
    first: dict[tuple[str, str, str], SequenceResource] = {}
    found: dict[ResourceKey, list[str]] = {}
    for resource in oldest_first:
        declaration = active.get(resource.key)
        if declaration is None:
            continue
        slot = (declaration.project, declaration.stage, declaration.sequence)
        older = first.setdefault(slot, resource)
        if older is not resource:
            found[resource.key] = [
                f"{declaration.name_field}: sequence {declaration.sequence!r} is defined twice"
                f" in this stage; Sequence {older.title} declared it first"
            ]
    return found


def _project_problems(active: Mapping[ResourceKey, Declaration]) -> dict[ResourceKey, list[str]]:
    """Resources whose ``triggeredOn`` names a sequence that their project does not have.

    The whole project is parsed, so the message is validate's own. Any other problem of the
    whole shipyard is reported too (none is expected once every declaration passed on its own).
    """
    found: dict[ResourceKey, list[str]] = {}
    for project, members in _by_project(active).items():
        try:
            parse_shipyard(_layout(project, [declaration for _, declaration in members])[0])
        except InvalidShipyard as exc:
            for key, message in _owners(project, members, exc.problems):
                found.setdefault(key, []).append(message)
    return found


def _project_warnings(active: Mapping[ResourceKey, Declaration]) -> dict[ResourceKey, list[str]]:
    """Loops of triggers in each assembled shipyard, on the resource whose trigger closes one."""
    found: dict[ResourceKey, list[str]] = {}
    for project, members in _by_project(active).items():
        try:
            shipyard = parse_shipyard(_layout(project, [d for _, d in members])[0])
        except InvalidShipyard:
            continue  # not expected: the fixed point found no problem
        loops: list[Problem] = []
        for warning in shipyard.warnings:
            path, _, message = warning.partition(": ")
            if _TRIGGER_PATH.search(path):
                loops.append(Problem(path, message))
        for key, message in _owners(project, members, loops):
            found.setdefault(key, []).append(message)
    return found


def _owners(
    project: str, members: list[tuple[ResourceKey, Declaration]], problems: Iterable[Problem]
) -> list[tuple[ResourceKey, str]]:
    """Which resource each message of the project's assembled shipyard is about, in its terms."""
    _, positions = _layout(project, [declaration for _, declaration in members])
    owners = {id(declaration): key for key, declaration in members}
    return [
        (owners[id(declaration)], f"{field}: {problem.message}")
        for problem in problems
        for declaration, field in _blame(problem.path, positions)
    ]


def _blame(path: str, positions: list[list[Declaration]]) -> list[tuple[Declaration, str]]:
    """Which declarations a shipyard field path points at, with the field in their terms."""
    match = _ASSEMBLED_PATH.match(path)
    if match is None:
        return [(declaration, "spec") for stage in positions for declaration in stage]
    stage_index, sequence_index, rest = match.groups()
    stage = positions[int(stage_index)]
    if sequence_index is None:  # the stage itself: every resource of that stage named it
        field = "spec.stage" if rest in ("", ".name") else "spec"
        return [(declaration, field) for declaration in stage]
    declaration = stage[int(sequence_index)]
    return [(declaration, declaration.field(rest))]


# ---------------------------------------------------------------------- layout


def _by_project(
    active: Mapping[ResourceKey, Declaration],
) -> dict[str, list[tuple[ResourceKey, Declaration]]]:
    projects: dict[str, list[tuple[ResourceKey, Declaration]]] = {}
    for key, declaration in active.items():
        projects.setdefault(declaration.project, []).append((key, declaration))
    return projects


def _shipyards(active: Mapping[ResourceKey, Declaration]) -> dict[str, JsonMap]:
    return {
        project: shipyard_document(project, [declaration for _, declaration in members])
        for project, members in sorted(_by_project(active).items())
    }


def _layout(
    project: str, declarations: list[Declaration]
) -> tuple[dict[str, Any], list[list[Declaration]]]:
    """The shipyard document, and which declaration sits at each (stage, sequence) index."""
    stages: dict[str, list[Declaration]] = {}
    for declaration in declarations:
        stages.setdefault(declaration.stage, []).append(declaration)
    positions = [
        sorted(stages[stage], key=lambda d: (d.sequence, json.dumps(d.entry, default=str)))
        for stage in _stage_order(stages)
    ]
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": project, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "spec": {
            "stages": [
                {
                    "name": members[0].stage,
                    "sequences": [copy.deepcopy(dict(d.entry)) for d in members],
                }
                for members in positions
            ]
        },
    }
    return document, positions


def _stage_order(stages: Mapping[str, list[Declaration]]) -> list[str]:
    """Stages after the stages whose sequences trigger theirs; by name among equals and in loops."""
    after: dict[str, set[str]] = {stage: set() for stage in stages}
    for stage, members in stages.items():
        for declaration in members:
            for source in _trigger_stages(declaration):
                if source in stages and source != stage:
                    after[stage].add(source)
    waiting = {stage: len(sources) for stage, sources in after.items()}
    ready = [stage for stage, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while len(order) < len(stages):
        if not ready:  # a loop between stages: take the first by name and go on
            heapq.heappush(ready, min(stage for stage in stages if stage not in order))
        stage = heapq.heappop(ready)
        if stage in order:
            continue
        order.append(stage)
        for other, sources in after.items():
            if stage in sources and other not in order:
                waiting[other] -= 1
                if waiting[other] == 0:
                    heapq.heappush(ready, other)
    return order


def _trigger_stages(declaration: Declaration) -> list[str]:
    triggers = declaration.entry.get("triggeredOn")
    if not isinstance(triggers, list):
        return []
    stages: list[str] = []
    for trigger in triggers:
        event = trigger.get("event") if isinstance(trigger, Mapping) else None
        if isinstance(event, str) and event.count(".") == 2:
            stages.append(event.split(".", 1)[0])
    return stages
