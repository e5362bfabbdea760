"""The Keptn shipyard: stages, their sequences, and the tasks of each sequence.

A shipyard arrives as a plain mapping (parsed from YAML by an adapter) and leaves this
module as frozen dataclasses, or as an :class:`InvalidShipyard` listing every problem with
its field path and, when the adapter supplied a line map, its YAML line.

The rules follow Keptn v1's shipyard controller: ``apiVersion`` is ``spec.keptn.sh/<semver>``
with version at least 0.2; there is at least one stage; names follow Keptn's entity-name
rule; ``triggeredOn[].event`` reads ``<stage>.<sequence>.finished``. Where Keptn was lenient
(an unparsable ``triggeredAfter`` became zero) we stay compatible but say so in
``Shipyard.warnings``. Every stage also has an implicit ``evaluation`` sequence unless it
defines its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import durations, extensions, sli_sources, slo
from controlplane.domain.errors import InvalidShipyard, Problem, UnknownSequence, kind_of
from controlplane.domain.extensions import Concurrency, Retry, TaskTimeouts
from controlplane.domain.schedules import Schedule, parse_schedules

API_VERSION_PREFIX = "spec.keptn.sh/"
EVALUATION = "evaluation"
# The built-in quality gate answers both; its properties may hold the whole gate, the SLO
# keys of Keptn's slo.yaml and the source keys of our sli.yaml.
GATE_TASKS = (EVALUATION, "evaluate")
SLO_KEYS = ("objectives", "total_score", "comparison", "filter")
SLI_KEYS = ("indicators", "source", "provider", "prometheus")
NAME_RULE = re.compile(r"(^[a-z][a-z0-9-]*[a-z0-9]$)|(^[a-z][a-z0-9]*$)")
_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+].*)?$")
_RESULTS = ("pass", "warning")

JsonMap = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    triggered_after: float = 0.0  # seconds
    properties: JsonMap | None = None
    timeout: TaskTimeouts | None = None
    retry: Retry | None = None
    pause_after_errors: int = 0  # 0: never pause; N: pause after N failed attempts in a row
    callback: bool = False  # carry a one-time callback URL in the .triggered data


@dataclass(frozen=True, slots=True)
class Trigger:
    """``triggeredOn`` entry: start this sequence when ``<stage>.<sequence>`` finishes."""

    stage: str
    sequence: str
    # None means "no selector": fire on pass or warning (Keptn's code, not its docs).
    match: Mapping[str, str] | None = None

    @property
    def event(self) -> str:
        return f"{self.stage}.{self.sequence}.finished"

    def fires_on(self, result: str, last_task: str) -> bool:
        """Keptn's selector rule: ``result`` or ``<lastTask>.result``, literal equality."""
        if self.match is None:
            return result in _RESULTS
        return self.match.get("result") == result or (
            self.match.get(f"{last_task}.result") == result
        )


@dataclass(frozen=True, slots=True)
class Sequence:
    name: str
    tasks: tuple[Task, ...] = ()
    triggered_on: tuple[Trigger, ...] = ()
    timeout: float | None = None  # seconds from the trigger, paused time not counted
    concurrency: Concurrency | None = None
    loop: bool = False  # a triggeredOn cycle through this sequence is intended


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    sequences: tuple[Sequence, ...] = ()

    def sequence(self, name: str) -> Sequence | None:
        for candidate in self.sequences:
            if candidate.name == name:
                return candidate
        if name == EVALUATION:
            return Sequence(EVALUATION, (Task(EVALUATION),))
        return None


@dataclass(frozen=True, slots=True)
class Shipyard:
    api_version: str
    name: str
    stages: tuple[Stage, ...]
    schedules: tuple[Schedule, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def stage(self, name: str) -> Stage | None:
        for candidate in self.stages:
            if candidate.name == name:
                return candidate
        return None

    def sequence(self, stage: str, name: str) -> Sequence:
        """Find a sequence, including the implicit ``evaluation`` one.

        Raises:
            UnknownSequence: with Keptn's wording, naming what is missing.
        """
        found_stage = self.stage(stage)
        if found_stage is None:
            raise UnknownSequence(f"stage {stage!r} is not defined in the shipyard")
        found = found_stage.sequence(name)
        if found is None:
            raise UnknownSequence(f"sequence {name!r} is not defined in stage {stage!r}")
        return found

    def triggered_by(
        self, stage: str, sequence: str, result: str, last_task: str
    ) -> list[tuple[Stage, Sequence]]:
        """Sequences whose ``triggeredOn`` fires when ``stage.sequence`` finished so."""
        fired: list[tuple[Stage, Sequence]] = []
        for candidate_stage in self.stages:
            for candidate in candidate_stage.sequences:
                for trigger in candidate.triggered_on:
                    if (trigger.stage, trigger.sequence) != (stage, sequence):
                        continue
                    if trigger.fires_on(result, last_task):
                        fired.append((candidate_stage, candidate))
                        break
        return fired


class _Collector:
    def __init__(self, lines: Mapping[str, int] | None) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self._lines = lines or {}

    def line(self, path: str) -> int | None:
        # Fall back to the nearest enclosing node that has a line.
        probe = path
        while probe:
            if probe in self._lines:
                return self._lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return self._lines.get("", None)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, self.line(path)))

    def warn(self, path: str, message: str) -> None:
        line = self.line(path)
        where = f"line {line}: " if line is not None else ""
        self.warnings.append(f"{where}{path}: {message}")


def parse_shipyard(
    document: object, *, source: str = "", lines: Mapping[str, int] | None = None
) -> Shipyard:
    """Turn a parsed YAML/JSON document into a :class:`Shipyard`.

    Args:
        document: the mapping read from the file or API.
        source: where it came from (a file name), used in messages.
        lines: optional map from field path (``spec.stages[0].name``) to YAML line.

    Raises:
        InvalidShipyard: listing every problem found, each with its path and line.
    """
    out = _Collector(lines)
    if not isinstance(document, Mapping):
        out.add("", f"a shipyard is a mapping, got {kind_of(document)}")
        raise InvalidShipyard(out.problems, source)
    api_version = _api_version(document.get("apiVersion"), out)
    metadata = document.get("metadata")
    name = ""
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        name = metadata["name"]
    stages = _stages(document.get("spec"), out)
    schedules = _schedules(document.get("spec"), stages, out)
    if not out.problems:
        _check_triggers(stages, out)
    if out.problems:
        raise InvalidShipyard(out.problems, source)
    return Shipyard(api_version, name, stages, schedules, tuple(out.warnings))


def _schedules(spec: object, stages: tuple[Stage, ...], out: _Collector) -> tuple[Schedule, ...]:
    """``spec.schedules``: parsed by :mod:`.schedules`, checked here against the stages."""
    if not isinstance(spec, Mapping):
        return ()
    parsed, problems = parse_schedules(spec.get("schedules"), "spec.schedules")
    for problem in problems:
        out.add(problem.path, problem.message)
    by_name = {stage.name: stage for stage in stages}
    for index, raw in enumerate(spec.get("schedules") or ()):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("stage"), str):
            continue
        stage = by_name.get(raw["stage"])
        if stage is None:
            out.add(f"spec.schedules[{index}].stage", f"stage {raw['stage']!r} is not defined")
        elif isinstance(raw.get("sequence"), str) and stage.sequence(raw["sequence"]) is None:
            out.add(
                f"spec.schedules[{index}].sequence",
                f"sequence {raw['sequence']!r} is not defined in stage {stage.name!r}",
            )
    return parsed


def _api_version(value: object, out: _Collector) -> str:
    if not isinstance(value, str) or not value.startswith(API_VERSION_PREFIX):
        out.add(
            "apiVersion",
            f"must be '{API_VERSION_PREFIX}<version>' such as"
            f" '{API_VERSION_PREFIX}0.2.4', got {value!r}",
        )
        return ""
    match = _SEMVER.match(value[len(API_VERSION_PREFIX) :])
    if match is None:
        out.add("apiVersion", f"{value!r} does not end in a semantic version")
        return value
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    if (major, minor) < (0, 2):
        out.add("apiVersion", f"version must be 0.2 or newer, got {value!r}")
    return value


def _stages(spec: object, out: _Collector) -> tuple[Stage, ...]:
    if not isinstance(spec, Mapping):
        out.add("spec", "is required and must be a mapping with 'stages'")
        return ()
    raw = spec.get("stages")
    if not isinstance(raw, list) or not raw:
        out.add("spec.stages", "must be a non-empty list of stages")
        return ()
    stages: list[Stage] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"spec.stages[{index}]"
        if not isinstance(item, Mapping):
            out.add(path, f"a stage is a mapping with 'name' and 'sequences', got {kind_of(item)}")
            continue
        name = _name(item.get("name"), f"{path}.name", "stage", out)
        if name and name in seen:
            out.add(f"{path}.name", f"stage {name!r} is defined twice")
        seen.add(name)
        stages.append(Stage(name, _sequences(item.get("sequences"), path, out)))
    return tuple(stages)


def _sequences(raw: object, stage_path: str, out: _Collector) -> tuple[Sequence, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        out.add(f"{stage_path}.sequences", f"must be a list, got {kind_of(raw)}")
        return ()
    sequences: list[Sequence] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path = f"{stage_path}.sequences[{index}]"
        if not isinstance(item, Mapping):
            out.add(path, f"a sequence is a mapping with 'name' and 'tasks', got {kind_of(item)}")
            continue
        name = _name(item.get("name"), f"{path}.name", "sequence", out, rule=False)
        if name and name in seen:
            out.add(f"{path}.name", f"sequence {name!r} is defined twice in this stage")
        seen.add(name)
        sequences.append(
            Sequence(
                name,
                _tasks(item.get("tasks"), path, out),
                _triggers(item.get("triggeredOn"), path, out),
                timeout=extensions.sequence_timeout(
                    item.get("timeout"), f"{path}.timeout", out.add
                ),
                concurrency=extensions.concurrency(
                    item.get("concurrency"), f"{path}.concurrency", out.add
                ),
                loop=extensions.flag(item.get("loop"), f"{path}.loop", out.add),
            )
        )
    return tuple(sequences)


def _tasks(raw: object, sequence_path: str, out: _Collector) -> tuple[Task, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        out.add(f"{sequence_path}.tasks", f"must be a list, got {kind_of(raw)}")
        return ()
    tasks: list[Task] = []
    for index, item in enumerate(raw):
        path = f"{sequence_path}.tasks[{index}]"
        if not isinstance(item, Mapping):
            out.add(path, f"a task is a mapping with 'name', got {kind_of(item)}")
            continue
        name = _name(item.get("name"), f"{path}.name", "task", out, rule=False)
        delay = _delay(item.get("triggeredAfter"), f"{path}.triggeredAfter", out)
        properties = item.get("properties")
        if properties is not None and not isinstance(properties, Mapping):
            out.add(f"{path}.properties", f"must be a mapping, got {kind_of(properties)}")
            properties = None
        if properties and name in GATE_TASKS:
            _check_gate(properties, f"{path}.properties", out)
        tasks.append(
            Task(
                name,
                delay,
                dict(properties) if properties else None,
                timeout=extensions.task_timeouts(item.get("timeout"), f"{path}.timeout", out.add),
                retry=extensions.retry(item.get("retry"), f"{path}.retry", out.add),
                pause_after_errors=extensions.pause_after_errors(
                    item.get("pauseAfterErrors"), f"{path}.pauseAfterErrors", out.add
                ),
                callback=extensions.flag(item.get("callback"), f"{path}.callback", out.add),
            )
        )
    return tuple(tasks)


def _check_gate(properties: Mapping[str, Any], path: str, out: _Collector) -> None:
    """A quality gate written inline must be readable now, not fail at its first run."""
    slo_part = {key: properties[key] for key in SLO_KEYS if key in properties}
    if slo_part:
        try:
            parsed = slo.parse_slo(slo_part)
        except slo.InvalidSLO as exc:
            for problem in exc.problems:
                out.add(f"{path}.{problem.path}", problem.message)
        else:
            for text in slo.criteria_problems(parsed):
                where, _, message = text.partition(": ")
                out.add(f"{path}.{where}", message)
    sli_part = {key: properties[key] for key in SLI_KEYS if key in properties}
    if sli_part:
        try:
            sli_sources.parse_sli(sli_part, default_source=sli_sources.DATA)
        except sli_sources.InvalidSLI as exc:
            for problem in exc.problems:
                out.add(f"{path}.{problem.path}", problem.message)


def _delay(raw: object, path: str, out: _Collector) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        return durations.parse_duration(str(raw))
    except ValueError as exc:
        # Keptn logged this and used no delay; keep the shipyard valid but say so.
        out.warn(path, f"{exc}; the task starts without delay, as Keptn did")
        return 0.0


def _triggers(raw: object, sequence_path: str, out: _Collector) -> tuple[Trigger, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        out.add(f"{sequence_path}.triggeredOn", f"must be a list, got {kind_of(raw)}")
        return ()
    triggers: list[Trigger] = []
    for index, item in enumerate(raw):
        path = f"{sequence_path}.triggeredOn[{index}]"
        if not isinstance(item, Mapping):
            out.add(path, f"must be a mapping with 'event', got {kind_of(item)}")
            continue
        event = item.get("event")
        parts = event.split(".") if isinstance(event, str) else []
        if len(parts) != 3 or parts[2] != "finished" or not all(parts):
            out.add(f"{path}.event", f"must read '<stage>.<sequence>.finished', got {event!r}")
            continue
        triggers.append(Trigger(parts[0], parts[1], _selector(item.get("selector"), path, out)))
    return tuple(triggers)


def _selector(raw: object, trigger_path: str, out: _Collector) -> Mapping[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        out.add(f"{trigger_path}.selector", f"must be a mapping with 'match', got {kind_of(raw)}")
        return None
    match = raw.get("match")
    if match is None:
        return None
    if not isinstance(match, Mapping):
        out.add(f"{trigger_path}.selector.match", f"must be a mapping, got {kind_of(match)}")
        return None
    return {str(key): str(value) for key, value in match.items()}


def _check_triggers(stages: tuple[Stage, ...], out: _Collector) -> None:
    # Keptn took a trigger naming no sequence silently, and it never fired: it can only be a
    # mistake, so it is refused. A loop of triggers may never end, so one that no sequence on
    # it declares with 'loop: true' is worth a warning. The rules live in graph.py, which
    # reads this module's types; importing it here, not at the top, avoids an import cycle.
    from controlplane.domain import graph

    for problem in graph.dangling_links(stages):
        out.add(problem.path, problem.message)
    if not out.problems:
        for cycle in graph.unintended_cycles(stages):
            out.warn(cycle.path, cycle.message)


def _name(value: object, path: str, what: str, out: _Collector, *, rule: bool = True) -> str:
    if not isinstance(value, str) or not value:
        out.add(path, f"every {what} needs a non-empty name")
        return ""
    if "." in value:
        out.add(path, f"{what} name {value!r} must not contain dots (they separate event types)")
    elif any(char.isspace() or char in "*>" for char in value):
        out.add(
            path,
            f"{what} name {value!r} must not contain whitespace, '*' or '>'"
            " (names become NATS subjects)",
        )
    elif rule and not NAME_RULE.fullmatch(value):
        out.add(
            path,
            f"{what} name {value!r} must be lowercase letters, digits and dashes,"
            " start with a letter and not end with a dash",
        )
    return value
