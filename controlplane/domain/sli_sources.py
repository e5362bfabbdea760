"""Where the values of service level indicators come from: the SLI configuration.

A quality gate compares indicator values with objectives (the SLO file). This module reads
the other half, the file that says how to obtain each value. It is a superset of Keptn's
``sli.yaml``, so a Keptn file works unchanged::

    spec_version: "1.0"              # optional; when given it must be "1.0"
    source: prometheus               # source of the indicators written as plain strings
    provider: dynatrace              # get-sli only: the sliProvider named in get-sli.triggered
    prometheus:                      # this file's Prometheus server (else the control plane's)
      url: http://prometheus:9090
      auth: {type: bearer, secret: PROM_TOKEN}
      headers: {X-Scope-OrgID: team-a}
    indicators:
      p95: 'histogram_quantile(0.95, sum(rate(bucket{job="$SERVICE"}[$DURATION_SECONDS])) by (le))'
      gps_present: {source: data, path: extract-metadata.gps.present}
      stock: {source: http, url: "http://stock:9000/stock?from=$START", path: items.0.count}
      errors: {source: prometheus, query: 'sum(rate(errors[5m]))', url: http://other:9090}
      lcp: {source: get-sli}

An indicator is either a plain string or a mapping with a ``source``:

``data``
    ``path``: a dotted path into the data the sequence carried so far (a task's output),
    list positions as numbers (``items.0.count``). A plain string is the path.
``prometheus``
    ``query``: an instant PromQL query, evaluated at the end of the window. ``url``, and
    with it ``auth`` and ``headers``, choose another server than the file's ``prometheus``
    section (which in turn defaults to the control plane's setting). A plain string is
    the query, as in Keptn.
``http``
    ``url`` (required), ``method`` (GET, POST, PUT, PATCH or DELETE; default GET),
    ``headers``, ``body`` (a string sent as it is, or a mapping or list sent as JSON with
    ``Content-Type: application/json`` unless the headers name a type), ``auth``, and
    ``path`` into the JSON answer (empty: the whole answer is the number). A plain string
    is the URL.
``get-sli``
    asked of an external SLI provider over events (Keptn's ``get-sli.triggered``), named
    by ``provider``. A plain string is kept as ``query`` but not sent: Keptn providers
    read their own configuration.

A mapping without ``source`` and every plain string take the file's ``source``; without
one, the caller's default applies (``data`` for a configuration written inline in a
shipyard task, ``prometheus`` for stored files, as Keptn's files are Prometheus queries).
The file's ``source`` thus applies to its own indicators only, not to files layered on it.

``auth`` is ``{type: bearer | basic, secret: NAME}``. The credential itself never appears
in the configuration: ``NAME`` is looked up in the control plane's secrets, and for
``basic`` the secret holds ``user:password``. ``headers`` are plain, non-secret values.

Files layer (:func:`merge_sli`): project, then stage, then service, then the inline
configuration; a later layer replaces indicators by name and sets ``provider`` and
``prometheus`` when it has them.

Queries, URLs, headers and bodies may hold placeholders (:func:`placeholders`,
:func:`expand`): Keptn's ``$PROJECT``, ``$STAGE``, ``$SERVICE``, ``$DEPLOYMENT`` and
``$DURATION_SECONDS`` (``300s``), ours ``$START`` and ``$END`` (RFC 3339, UTC) and
``$START_EPOCH`` and ``$END_EPOCH`` (whole seconds), and each SLO filter as ``$key`` and
``$KEY``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.domain.errors import InvalidConfiguration, Problem
from controlplane.domain.sli import IndicatorValue, Timeframe

DATA = "data"
PROMETHEUS = "prometheus"
HTTP = "http"
GET_SLI = "get-sli"
SOURCES = (DATA, PROMETHEUS, HTTP, GET_SLI)
AUTH_KINDS = ("bearer", "basic")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SPEC_VERSION = "1.0"
SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]+")

_TOP_LEVEL = ("spec_version", "source", "provider", "prometheus", "indicators")
_SERVER_FIELDS = ("url", "auth", "headers")
# The fields each source understands besides ``source``.
_FIELDS: Mapping[str, tuple[str, ...]] = {
    DATA: ("path",),
    PROMETHEUS: ("query", "url", "auth", "headers"),
    HTTP: ("url", "path", "method", "headers", "body", "auth"),
    GET_SLI: ("query",),
}
# Which field a plain string fills, per source.
_PLAIN_FIELD = {DATA: "path", PROMETHEUS: "query", HTTP: "url", GET_SLI: "query"}
_SHOWN = 60  # characters of a found value quoted in a message


class InvalidSLI(InvalidConfiguration):
    """The SLI configuration is invalid."""


@dataclass(frozen=True, slots=True)
class Auth:
    """A credential by reference: the kind of ``Authorization`` and the secret's name."""

    kind: str  # "bearer" or "basic"
    secret: str

    def header(self, value: str) -> dict[str, str]:
        """The ``Authorization`` header for the secret's ``value``.

        For ``basic`` the value is ``user:password``.
        """
        if self.kind == "basic":
            token = base64.b64encode(value.encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return {"Authorization": f"Bearer {value}"}


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """How to obtain one indicator; which fields matter depends on ``source``."""

    name: str
    source: str
    query: str = ""
    path: str = ""
    url: str = ""
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    auth: Auth | None = None


@dataclass(frozen=True, slots=True)
class PrometheusServer:
    url: str
    auth: Auth | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SliConfig:
    indicators: Mapping[str, IndicatorSpec] = field(default_factory=dict)
    provider: str = ""
    prometheus: PrometheusServer | None = None


def parse_sli(document: Mapping[str, Any] | None, *, default_source: str) -> SliConfig:
    """Read an SLI configuration (a parsed ``sli.yaml`` or an inline mapping).

    Args:
        document: the mapping, or None for an empty file.
        default_source: the source of plain-string indicators when the document names none.

    Raises:
        InvalidSLI: listing every problem with its field path.
    """
    if default_source not in SOURCES:
        raise ValueError(f"default_source must be one of {', '.join(SOURCES)}")
    if document is None:
        return SliConfig()
    reader = _Reader()
    config = reader.config(document, default_source)
    if reader.problems:
        raise InvalidSLI(reader.problems)
    return config


def merge_sli(base: SliConfig, override: SliConfig) -> SliConfig:
    """Layer ``override`` on ``base``: its indicators win by name, as do its settings."""
    return SliConfig(
        indicators={**base.indicators, **override.indicators},
        provider=override.provider or base.provider,
        prometheus=override.prometheus or base.prometheus,
    )


class _Reader:
    """Collects every problem of one document instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def config(self, document: object, default_source: str) -> SliConfig:
        if not isinstance(document, Mapping):
            self.problem("", f"must be a mapping, not {_kind(document)}")
            return SliConfig()
        self.unknown(document, _TOP_LEVEL, "")
        self.spec_version(document.get("spec_version"))
        source = self.source(document.get("source", default_source), "source") or default_source
        provider = self.text(document.get("provider", ""), "provider")
        server = self.server(document.get("prometheus"), "prometheus")
        indicators = self.indicators(document.get("indicators"), source)
        return SliConfig(indicators, provider, server)

    def unknown(self, mapping: Mapping[Any, Any], known: tuple[str, ...], path: str) -> None:
        for key in mapping:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                self.problem(where, f"unknown field (known: {', '.join(known)})")

    def spec_version(self, value: object) -> None:
        # YAML reads an unquoted 1.0 as a number; Keptn's files quote it, both mean the same.
        if value is None or str(value) == SPEC_VERSION:
            return
        self.problem("spec_version", f'must be "{SPEC_VERSION}", not {value!r}')

    def source(self, value: object, path: str) -> str | None:
        if isinstance(value, str) and value in SOURCES:
            return value
        self.problem(path, f"must be one of {', '.join(SOURCES)}, not {value!r}")
        return None

    def text(self, value: object, path: str) -> str:
        if value is None:  # YAML's `key:` with nothing after it
            return ""
        if isinstance(value, str):
            return value
        self.problem(path, f"must be a string, not {_kind(value)}")
        return ""

    def url(self, value: object, path: str) -> str:
        url = self.text(value, path)
        if url and not url.startswith(("http://", "https://")):
            self.problem(path, f"must start with http:// or https://, not {url!r}")
        return url

    def server(self, value: object, path: str) -> PrometheusServer | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a mapping, not {_kind(value)}")
            return None
        self.unknown(value, _SERVER_FIELDS, path)
        if "url" not in value:
            self.problem(f"{path}.url", "required")
        url = self.url(value.get("url", ""), f"{path}.url")
        auth = self.auth(value.get("auth"), f"{path}.auth")
        headers = self.headers(value.get("headers"), f"{path}.headers")
        return PrometheusServer(url, auth, headers)

    def auth(self, value: object, path: str) -> Auth | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a mapping with type and secret, not {_kind(value)}")
            return None
        self.unknown(value, ("type", "secret"), path)
        kind = value.get("type")
        if kind not in AUTH_KINDS:
            self.problem(f"{path}.type", f"must be one of {', '.join(AUTH_KINDS)}, not {kind!r}")
        secret = value.get("secret")
        if secret is None:
            self.problem(f"{path}.secret", "required: the name of a control plane secret")
        elif not (isinstance(secret, str) and SECRET_NAME.fullmatch(secret)):
            self.problem(
                f"{path}.secret",
                f"must be a secret's name (letters, digits, '-', '_', '.'), not {secret!r}",
            )
        if kind in AUTH_KINDS and isinstance(secret, str):
            return Auth(str(kind), secret)
        return None

    def headers(self, value: object, path: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a mapping of names to values, not {_kind(value)}")
            return {}
        headers: dict[str, str] = {}
        for name, header in value.items():
            # YAML turns `X-Tenant: 42` into a number; a header value is text either way.
            if isinstance(header, str | int | float) and not isinstance(header, bool):
                headers[str(name)] = str(header)
            else:
                self.problem(f"{path}.{name}", f"must be a string, not {_kind(header)}")
        return headers

    def body(self, value: object, path: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, Mapping | list):
            return json.dumps(value, separators=(",", ":"))
        self.problem(path, f"must be a string, a mapping or a list, not {_kind(value)}")
        return None

    def method(self, value: object, path: str) -> str:
        method = self.text(value, path).upper()
        if method and method not in METHODS:
            self.problem(path, f"must be one of {', '.join(METHODS)}, not {value!r}")
        return method or "GET"

    def dotted(self, value: object, path: str, *, required: bool) -> str:
        dotted = self.text(value, path)
        if not dotted:
            if required:
                self.problem(path, "required: a dotted path such as task.field.0.value")
            return ""
        if any(not part for part in dotted.split(".")):
            self.problem(path, f"has an empty part: {dotted!r}")
        return dotted

    def indicators(self, value: object, default_source: str) -> dict[str, IndicatorSpec]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem("indicators", f"must be a mapping of names to queries, not {_kind(value)}")
            return {}
        found: dict[str, IndicatorSpec] = {}
        for name, entry in value.items():
            path = f"indicators.{name}"
            if not (isinstance(name, str) and name.strip()):
                self.problem(path, "the name must be a non-empty string")
                continue
            spec = self.indicator(name, entry, default_source, path)
            if spec is not None:
                found[name] = spec
        return found

    def indicator(
        self, name: str, entry: object, default_source: str, path: str
    ) -> IndicatorSpec | None:
        if isinstance(entry, str):
            entry = {_PLAIN_FIELD[default_source]: entry}
        if not isinstance(entry, Mapping):
            self.problem(path, f"must be a string or a mapping, not {_kind(entry)}")
            return None
        source = self.source(entry.get("source", default_source), f"{path}.source")
        if source is None:
            return None
        self.unknown(entry, ("source", *_FIELDS[source]), path)
        if source == DATA:
            return IndicatorSpec(
                name, source, path=self.dotted(entry.get("path"), f"{path}.path", required=True)
            )
        if source == PROMETHEUS:
            return self.prometheus_indicator(name, entry, path)
        if source == HTTP:
            return self.http_indicator(name, entry, path)
        return IndicatorSpec(name, source, query=self.text(entry.get("query", ""), f"{path}.query"))

    def prometheus_indicator(self, name: str, entry: Mapping[str, Any], path: str) -> IndicatorSpec:
        query = self.text(entry.get("query", ""), f"{path}.query")
        if not query.strip():
            self.problem(f"{path}.query", "required for source prometheus")
        url = self.url(entry.get("url", ""), f"{path}.url")
        if not url:
            # Without a URL the server's own auth and headers apply; mixing them is a mistake.
            for key in ("auth", "headers"):
                if key in entry:
                    self.problem(f"{path}.{key}", "only together with url (else prometheus.*)")
        return IndicatorSpec(
            name,
            PROMETHEUS,
            query=query,
            url=url,
            headers=self.headers(entry.get("headers"), f"{path}.headers"),
            auth=self.auth(entry.get("auth"), f"{path}.auth"),
        )

    def http_indicator(self, name: str, entry: Mapping[str, Any], path: str) -> IndicatorSpec:
        if not entry.get("url"):
            self.problem(f"{path}.url", "required for source http")
        headers = self.headers(entry.get("headers"), f"{path}.headers")
        raw_body = entry.get("body")
        if isinstance(raw_body, Mapping | list) and not any(
            name.lower() == "content-type" for name in headers
        ):
            headers["Content-Type"] = "application/json"
        return IndicatorSpec(
            name,
            HTTP,
            url=self.url(entry.get("url") or "", f"{path}.url"),
            path=self.dotted(entry.get("path", ""), f"{path}.path", required=False),
            method=self.method(entry.get("method", "GET"), f"{path}.method"),
            headers=headers,
            body=self.body(raw_body, f"{path}.body"),
            auth=self.auth(entry.get("auth"), f"{path}.auth"),
        )


def placeholders(
    *,
    project: str,
    stage: str,
    service: str,
    deployment: str,
    window: Timeframe,
    filters: Mapping[str, str],
) -> dict[str, str]:
    """The values of the placeholders, by name without the ``$``.

    SLO filters come as given and uppercased; as in Keptn they lose quote characters (so a
    value cannot end a PromQL string early) and take precedence over the built-in names.
    """
    variables = {
        "PROJECT": project,
        "STAGE": stage,
        "SERVICE": service,
        "DEPLOYMENT": deployment,
        "DURATION_SECONDS": f"{round(window.seconds)}s",
        "START": _rfc3339(window.start),
        "END": _rfc3339(window.end),
        "START_EPOCH": str(math.floor(window.start)),
        "END_EPOCH": str(math.floor(window.end)),
    }
    for key, value in filters.items():
        cleaned = str(value).replace("'", "").replace('"', "")
        variables[key] = cleaned
        variables[key.upper()] = cleaned
    return variables


def expand(template: str, variables: Mapping[str, str]) -> str:
    """Replace each ``$NAME`` of ``variables`` in ``template``, in one pass.

    Longer names match first (``$START_EPOCH`` before ``$START``), and replaced text is
    not scanned again, so a value holding ``$SERVICE`` stays as it is.
    """
    names = sorted((name for name in variables if name), key=len, reverse=True)
    if not names:
        return template
    pattern = re.compile(r"\$(" + "|".join(re.escape(name) for name in names) + ")")
    return pattern.sub(lambda match: variables[match.group(1)], template)


def value_at(document: Any, path: str, *, metric: str) -> IndicatorValue:
    """Read the number at the dotted ``path`` of ``document`` (parsed JSON or event data).

    Numbers count as they are, booleans as 1 or 0, numeric strings as their number. Anything
    else, a missing key, null, NaN or infinity gives a failed value naming the path and what
    was found there.
    """
    found = document
    parent = "the document"
    for part in path.split(".") if path else ():
        step = _step(found, part)
        if step is None:
            return IndicatorValue.failed(
                metric, f"{path} not found: {_missing(found, parent, part)}"
            )
        found = step[0]
        parent = repr(part)
    where = path or "the answer"
    number = _number(found)
    if isinstance(number, str):
        return IndicatorValue.failed(metric, f"{where} is {number}")
    return IndicatorValue(metric, number)


def _step(node: Any, part: str) -> tuple[Any] | None:
    """One level down, wrapped so a found null differs from nothing found."""
    if isinstance(node, Mapping):
        return (node[part],) if part in node else None
    if isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
        return (node[int(part)],)
    return None


def _missing(node: Any, parent: str, part: str) -> str:
    if isinstance(node, Mapping):
        return f"{parent} has no key {part!r}"
    if isinstance(node, list | tuple):
        if part.isdigit():
            return f"{parent} has no index {part} (length {len(node)})"
        return f"{parent} is a list, so {part!r} must be an index"
    return f"{parent} is {_shown(node)}, which has no {part!r}"


def _number(value: Any) -> float | str:
    """The value as a finite float, or the reason it is not one."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return f"{_shown(value)}, not a number"
    elif value is None:
        return "null, not a number"
    else:
        return f"{_kind(value)}, not a number"
    if not math.isfinite(number):
        return f"{_shown(value)}, not a finite number"
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
