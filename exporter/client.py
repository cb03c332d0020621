"""The ConnectyCube Admin Statistics API: requests, answers and their errors.

Nothing here knows about Prometheus. Every failure is raised as an ``APIError``
subclass whose ``outcome`` names the kind of failure and whose message names the
endpoint and the reason, never the API key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlencode

import httpx

from exporter.config import AppConfig

API_KEY_HEADER: Final = "CB-Administration-API-Key"
MESSAGES: Final = "messages"
"""The kind of count that is not a dialog type: messages sent."""

T = TypeVar("T")

Kind = str | int
"""``MESSAGES`` or a dialog type code."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 1 << 20  # 100 days of counts are ~2 KB


class APIError(Exception):
    """A request that did not give a usable answer."""

    outcome: ClassVar[str] = "error"

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class APITimeout(APIError):
    outcome = "timeout"


class APIConnectionError(APIError):
    outcome = "connection_error"


class APIStatusError(APIError):
    outcome = "http_error"

    def __init__(self, endpoint: str, status: int, reason: str) -> None:
        super().__init__(endpoint, reason)
        self.status = status


class APIInvalidResponse(APIError):
    outcome = "invalid_response"


class InvalidAnswer(ValueError):
    """An answer that does not have the shape the API documents."""


def endpoint_path(kind: Kind, per_day: bool) -> str:
    """The endpoint that counts ``kind``, all in one or day by day."""
    if kind == MESSAGES:
        return "/admin/stats/messages/" + ("sent-per-day" if per_day else "sent-total")
    return "/admin/stats/dialogs/" + ("created-per-day" if per_day else "created-total")


def check_count(value: Any) -> int:
    # bool is an int subclass in Python; JSON true is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAnswer(f"count {value!r} is not an integer")
    if value < 0:
        raise InvalidAnswer(f"count {value} is negative")
    return value


def parse_total(payload: Any) -> int:
    """``{"total": N}`` to N."""
    if not isinstance(payload, dict) or "total" not in payload:
        raise InvalidAnswer('expected an object with "total"')
    return check_count(payload["total"])


def parse_per_day(payload: Any) -> dict[date, int]:
    """``{"YYYY-MM-DD": N, ...}`` to counts by day; the keys may come in any order."""
    if not isinstance(payload, dict):
        raise InvalidAnswer("expected an object of day: count")
    counts: dict[date, int] = {}
    for key, value in payload.items():
        try:
            day = date.fromisoformat(key)
        except (TypeError, ValueError):
            raise InvalidAnswer(f"key {str(key)[:40]!r} is not a YYYY-MM-DD date") from None
        if len(key) != 10:  # fromisoformat also takes 20230220, which the API never sends
            raise InvalidAnswer(f"key {key[:40]!r} is not a YYYY-MM-DD date")
        counts[day] = check_count(value)
    return counts


def build_query(
    kind: Kind,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    """The query string; the dialog type filter must be spelled ``types[]=N``."""
    params: list[tuple[str, int]] = [
        (name, value)
        for name, value in (
            ("start_date", start),
            ("end_date", end),
            ("limit", limit),
            ("offset", offset),
        )
        if value is not None
    ]
    if kind != MESSAGES:
        params.append(("types[]", int(kind)))
    # Brackets stay literal: a server may ignore the percent-encoded spelling.
    return urlencode(params, safe="[]")


class StatsClient:
    """Fetches counts for any app over one shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._http = http
        self._max_response_bytes = max_response_bytes

    async def total(
        self, app: AppConfig, kind: Kind, start: int | None = None, end: int | None = None
    ) -> int:
        """All-time count of ``kind``, or the count between ``start`` and ``end``."""
        path = endpoint_path(kind, per_day=False)
        payload = await self._get_json(app, path, build_query(kind, start, end))
        return _parsed(path, parse_total, payload)

    async def per_day(
        self,
        app: AppConfig,
        kind: Kind,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> dict[date, int]:
        """Counts of ``kind`` by day between ``start`` and ``end``; quiet days are absent."""
        path = endpoint_path(kind, per_day=True)
        query = build_query(kind, start, end, limit, offset)
        payload = await self._get_json(app, path, query)
        return _parsed(path, parse_per_day, payload)

    async def _get_json(self, app: AppConfig, path: str, query: str) -> Any:
        url = f"{app.api_url}{path}" + (f"?{query}" if query else "")
        headers = {API_KEY_HEADER: app.api_key.get_secret_value(), "Accept": "application/json"}
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                body = await self._read_capped(response, path)
        except httpx.TimeoutException:
            raise APITimeout(path, "timed out") from None
        except httpx.TransportError as exc:
            raise APIConnectionError(path, _scrub(_transport_reason(exc), app)) from None
        if not response.is_success:
            message = _scrub(_error_message(body), app)
            reason = f"HTTP {response.status_code}" + (f": {message}" if message else "")
            raise APIStatusError(path, response.status_code, reason)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise APIInvalidResponse(path, "answer is not JSON") from None

    async def _read_capped(self, response: httpx.Response, path: str) -> bytes:
        """Read the body, giving up once it is larger than any real answer."""
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_response_bytes:
                raise APIInvalidResponse(
                    path, f"answer is larger than {self._max_response_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _parsed(path: str, parse: Callable[[Any], T], payload: Any) -> T:
    try:
        return parse(payload)
    except InvalidAnswer as exc:
        raise APIInvalidResponse(path, str(exc)) from None


def _transport_reason(exc: httpx.TransportError) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _scrub(text: str, app: AppConfig) -> str:
    """Masks the key, should a library or a server ever echo it back."""
    return text.replace(app.api_key.get_secret_value(), "***")


def _error_message(body: bytes) -> str:
    """The API's own words (``{"errors": {"base": [...]}}``), kept short."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return ""
    messages: list[str] = []
    if isinstance(errors, dict):
        for value in errors.values():
            messages.extend(str(item) for item in (value if isinstance(value, list) else [value]))
    elif isinstance(errors, list):
        messages.extend(str(item) for item in errors)
    return "; ".join(messages)[:200]
