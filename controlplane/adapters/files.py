"""Shipyards written as YAML files: parsing with line numbers, and a directory of them.

:class:`YamlShipyardReader` parses one YAML text (safe loading only) into a
:class:`~controlplane.domain.shipyard.Shipyard`. It composes the YAML node tree once, records
the 1-based line of every field under the path the domain uses in its messages
(``apiVersion``, ``spec.stages[0].name``,
``spec.stages[0].sequences[1].tasks[0].triggeredAfter``), constructs the data from the same
tree and hands both to :func:`~controlplane.domain.shipyard.parse_shipyard`. Every problem
therefore comes back as :class:`~controlplane.domain.errors.InvalidShipyard` naming a file,
a line and a field; a YAML syntax error does too, with the line where the parser gave up.

:meth:`YamlShipyardReader.load_directory` reads every ``*.yaml``/``*.yml`` file of a
directory; the file's stem is the project name. A broken file is reported in its
:class:`LoadedFile` and does not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.application.ports import InvalidDocument
from controlplane.domain.errors import InvalidShipyard, Problem
from controlplane.domain.shipyard import Shipyard, parse_shipyard

SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
# A shipyard has a few hundred values; aliases must not turn a small text into millions.
MAX_NODES = 100_000
_TOO_DEEP = "invalid YAML: nested too deeply"


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """One shipyard file: its project, its text, and the shipyard or why it is invalid."""

    project: str
    path: Path
    text: str
    shipyard: Shipyard | None = None
    error: InvalidShipyard | None = None

    @property
    def ok(self) -> bool:
        return self.shipyard is not None


class YamlShipyardReader:
    """Parses shipyard YAML; implements the application's ``ShipyardReader`` port."""

    def read(self, text: str, source: str) -> Shipyard:
        """Parse ``text`` (named ``source`` in messages).

        Raises:
            InvalidShipyard: the YAML is malformed or the shipyard breaks a rule; every
                problem carries its field path and line.
        """
        document, lines = load_with_lines(text, source)
        return parse_shipyard(document, source=source, lines=lines)

    def load_directory(self, path: str | Path) -> list[LoadedFile]:
        """Read every ``*.yaml``/``*.yml`` file of ``path`` (not recursive), sorted by name.

        A file that cannot be read or parsed gets its error in its :class:`LoadedFile`; so
        does a second file for the same project (``demo.yaml`` and ``demo.yml``).
        """
        directory = Path(path)
        files = sorted(
            entry
            for entry in directory.iterdir()
            if entry.is_file() and entry.suffix in SUFFIXES and not entry.name.startswith(".")
        )
        loaded: list[LoadedFile] = []
        claimed: dict[str, Path] = {}
        for file in files:
            project = file.stem
            source = str(file)
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                error = InvalidShipyard([Problem("", f"cannot read the file: {exc}")], source)
                loaded.append(LoadedFile(project, file, "", error=error))
                continue
            if project in claimed:
                message = f"project {project!r} is already defined by {claimed[project].name}"
                error = InvalidShipyard([Problem("", message)], source)
                loaded.append(LoadedFile(project, file, text, error=error))
                continue
            claimed[project] = file
            try:
                shipyard = self.read(text, source)
            except InvalidShipyard as exc:
                loaded.append(LoadedFile(project, file, text, error=exc))
            else:
                loaded.append(LoadedFile(project, file, text, shipyard=shipyard))
        return loaded


def load_directory(path: str | Path) -> list[LoadedFile]:
    """:meth:`YamlShipyardReader.load_directory` with a default reader."""
    return YamlShipyardReader().load_directory(path)


def load_with_lines(text: str, source: str = "") -> tuple[object, dict[str, int]]:
    """Safely load one YAML document and map each field path to its 1-based line.

    Raises:
        InvalidShipyard: the text is not one well-formed YAML document, nests too deeply,
            refers to itself through an alias, or expands (through aliases) to more than
            :data:`MAX_NODES` nodes.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise InvalidShipyard([_syntax_problem(exc)], source) from None
    except yaml.YAMLError as exc:
        raise InvalidShipyard([Problem("", f"invalid YAML: {exc}")], source) from None
    except RecursionError:
        raise InvalidShipyard([Problem("", _TOO_DEEP)], source) from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        try:
            _walk(node, "", node.start_mark.line + 1, lines, set(), set())
            size = _expanded_size(node, {})
        except _Recursive as exc:
            problem = Problem(
                exc.path,
                "an alias refers to a node that contains it; recursive data is not allowed",
                exc.line,
            )
            raise InvalidShipyard([problem], source) from None
        except RecursionError:
            raise InvalidShipyard([Problem("", _TOO_DEEP)], source) from None
        if size > MAX_NODES:
            message = f"the document expands to more than {MAX_NODES} values through aliases"
            raise InvalidShipyard([Problem("", message, lines.get(""))], source)
    return document, lines


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or exc.context or "malformed YAML"
    if exc.context and exc.problem:
        what = f"{exc.problem} ({exc.context})"
    return Problem("", f"invalid YAML: {what}", mark.line + 1 if mark is not None else None)


class _Recursive(Exception):
    def __init__(self, path: str, line: int) -> None:
        super().__init__(path)
        self.path = path
        self.line = line


def _walk(
    node: yaml.Node,
    path: str,
    line: int,
    lines: dict[str, int],
    seen: set[int],
    ancestors: set[int],
) -> None:
    """Record ``path`` -> ``line`` and walk everything below ``node``.

    A mapping entry's line is its key's line (where a reader looks for ``name:``), a list
    item's is where the item starts. A node reached a second time through an alias is
    recorded but not walked again, so the walk stays linear in the size of the text; paths
    below such a repeat fall back, in the domain, to the nearest enclosing path that has a
    line.
    """
    lines[path] = line
    if id(node) in ancestors:
        raise _Recursive(path, line)
    if id(node) in seen:
        return
    seen.add(id(node))
    ancestors.add(id(node))
    if isinstance(node, yaml.MappingNode):
        # Construction already flattened merge keys (``<<: *defaults``) into node.value,
        # merged entries first; later duplicates win, as in the constructed mapping.
        entries: dict[str, tuple[int, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            entries.pop(key, None)
            entries[key] = (key_node.start_mark.line + 1, value_node)
        for key, (key_line, value_node) in entries.items():
            child = f"{path}.{key}" if path else key
            _walk(value_node, child, key_line, lines, seen, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", item.start_mark.line + 1, lines, seen, ancestors)
    ancestors.discard(id(node))


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes the document has once every alias is expanded (acyclic input)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(value, memo) for _, value in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, memo) for item in node.value)
    memo[id(node)] = size
    return size


class YamlDocuments:
    """Reads and writes configuration files (slo.yaml, sli.yaml); the ``DocumentReader`` port."""

    def load(self, text: str, source: str) -> Any:
        """Parse ``text`` safely; raises ``InvalidDocument`` naming ``source`` and the line."""
        try:
            return yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            raise InvalidDocument(f"{where}: not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise InvalidDocument(f"{source}: not valid YAML: {exc}") from None

    def dump(self, document: Any) -> str:
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
