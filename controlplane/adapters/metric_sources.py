"""Metric values over HTTP: Prometheus' instant-query API and any JSON endpoint.

:class:`HttpMetricSources` implements the application's ``MetricSources`` port with one
shared ``httpx.AsyncClient``. Every way a source can let us down (refused connection,
silence past the time limit, an HTTP error, an answer that is not JSON or too large, a
Prometheus error, a result that is not one number) becomes a ``SourceFailure`` whose message
starts with the source's address, so an evaluation can say which objective failed and why.

Addresses in messages lose their user-info and query string: both may carry credentials,
and messages end up in events that anyone reading the sequence can see.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from controlplane.application.ports import SourceFailure

__all__ = ["MAX_BODY", "HttpMetricSources"]

MAX_BODY = 1024 * 1024  # bytes of an answer we read before giving up
# Requests in flight at once, below the client's pool (100 connections): a queue inside
# httpcore's pool costs CPU on every change, and requests cancelled there by a time limit
# can leave the pool wedged for good (encode/httpcore#1093; measured in bench/evaluate.py).
MAX_IN_FLIGHT = 48
_EXCERPT = 200  # characters of an unexpected answer quoted in a message


class HttpMetricSources:
    """The ``MetricSources`` port over httpx; call :meth:`close` when done."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        max_body: int = MAX_BODY,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=True)
        self._max_body = max_body
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def close(self) -> None:
        await self._client.aclose()

    async def query_prometheus(
        self,
        url: str,
        query: str,
        *,
        at: float,
        headers: Mapping[str, str],
        time_limit: float,
    ) -> float:
        endpoint = f"{url.rstrip('/')}/api/v1/query"
        params = {"query": query, "time": f"{at:.3f}"}
        where = shown(url)
        status, content_type, body = await self._request(
            "GET",
            endpoint,
            params=params,
            headers=headers,
            body=None,
            time_limit=time_limit,
            where=where,
        )
        answer = _json_or_none(body)
        if isinstance(answer, Mapping) and answer.get("status") == "error":
            kind = answer.get("errorType", "error")
            raise SourceFailure(f"{where}: Prometheus {kind}: {answer.get('error', '')}")
        if status >= 400:
            raise SourceFailure(f"{where}: HTTP {status}: {_excerpt(body)}")
        if not isinstance(answer, Mapping) or not isinstance(answer.get("data"), Mapping):
            raise SourceFailure(
                f"{where}: not a Prometheus query answer ({content_type or 'no type'}):"
                f" {_excerpt(body)}"
            )
        return _prometheus_value(answer["data"], where)

    async def fetch_json(
        self,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        body: str | None,
        time_limit: float,
    ) -> Any:
        where = shown(url)
        status, content_type, answer = await self._request(
            method,
            url,
            params=None,
            headers=headers,
            body=body,
            time_limit=time_limit,
            where=where,
        )
        if status >= 400:
            raise SourceFailure(f"{where}: HTTP {status}: {_excerpt(answer)}")
        try:
            return json.loads(answer)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise SourceFailure(
                f"{where}: answered with something other than JSON"
                f" ({content_type or 'no type'}): {_excerpt(answer)}"
            ) from None

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        body: str | None,
        time_limit: float,
        where: str,
    ) -> tuple[int, str, bytes]:
        """Status, content type and (capped) body, or a ``SourceFailure`` led by ``where``."""
        try:
            # The wait for a free slot counts against the source's time limit.
            async with asyncio.timeout(time_limit), self._in_flight:
                return await self._exchange(method, url, params, headers, body, time_limit, where)
        except (TimeoutError, httpx.TimeoutException):
            raise SourceFailure(f"{where}: no answer within {time_limit:g}s") from None
        except httpx.ConnectError as error:
            raise SourceFailure(f"{where}: cannot connect ({_reason(error, url)})") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            raise SourceFailure(f"{where}: not a usable URL ({_reason(error, url)})") from None
        except httpx.HTTPError as error:
            raise SourceFailure(
                f"{where}: {type(error).__name__} ({_reason(error, url)})"
            ) from None

    async def _exchange(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        body: str | None,
        time_limit: float,
        where: str,
    ) -> tuple[int, str, bytes]:
        request = self._client.build_request(
            method.upper(),
            url,
            params=params,
            headers=dict(headers),
            content=body.encode() if body is not None else None,
            timeout=time_limit,
        )
        response = await self._client.send(request, stream=True)
        try:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > self._max_body:
                    raise SourceFailure(f"{shown(url)}: answer larger than {_size(self._max_body)}")
            return response.status_code, response.headers.get("content-type", ""), bytes(received)
        finally:
            await response.aclose()


def shown(url: str) -> str:
    """``url`` fit for a message: no user-info, query string or fragment; otherwise as given."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _prometheus_value(data: Mapping[str, Any], where: str) -> float:
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _sample(result[1], where)
    if kind == "vector" and isinstance(result, list):
        if not result:
            raise SourceFailure(f"{where}: no data (the query matched no series)")
        if len(result) > 1:
            raise SourceFailure(
                f"{where}: returned {len(result)} series;"
                " aggregate them to one, e.g. with sum or avg"
            )
        value = result[0].get("value") if isinstance(result[0], Mapping) else None
        if isinstance(value, list) and len(value) == 2:
            return _sample(value[1], where)
    if kind == "matrix":
        raise SourceFailure(
            f"{where}: returned a range vector; ask for an instant vector,"
            " e.g. wrap the range in rate(...) or avg_over_time(...)"
        )
    if kind == "string":
        raise SourceFailure(f"{where}: returned a string, not a number")
    raise SourceFailure(f"{where}: unexpected result of type {kind!r}")


def _sample(text: object, where: str) -> float:
    try:
        value = float(str(text))
    except ValueError:
        raise SourceFailure(f"{where}: sample {text!r} is not a number") from None
    if math.isnan(value):
        raise SourceFailure(
            f"{where}: returned NaN (for a ratio or rate: no samples in the window?)"
        )
    if math.isinf(value):
        raise SourceFailure(f"{where}: returned {text}, not a finite number")
    return value


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    if not text:
        return "(empty answer)"
    return text if len(text) <= _EXCERPT else f"{text[:_EXCERPT]}..."


def _reason(error: Exception, url: str) -> str:
    # httpx messages rarely carry the URL, but when they do it must not leak user-info.
    return (str(error) or type(error).__name__).replace(url, shown(url))


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    return f"{limit} bytes"
