"""Query parameters: each declared once, with its OpenAPI schema and its parser, so the
document (``bot.api.openapi``) and the checks cannot drift apart.

A parser gets the raw text and returns the value or raises ``ValueError`` with what was
wrong; ``parse_query`` turns that into a 400 naming the parameter.  Unknown parameters and
a parameter given twice are 400s too: a typo (``limt=5``) must not be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from agents.events import EVENT_TYPES
from bot.api.errors import bad_parameter
from bot.config_values import NAME_PATTERN

MAX_OFFSET: Final = 10_000
_DIGITS: Final = re.compile(r"[0-9]{1,9}")
# The windows /projects/{name}/history answers, in hours.
WINDOWS: Final = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24}
INCIDENT_STATES: Final = ("open", "resolved")


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]
    description: str
    required: bool = False
    default: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # style/explode for the document

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "required": self.required,
                "description": self.description, "schema": self.schema, **self.extra}  # fmt: skip


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text) if _DIGITS.fullmatch(text) else None
        if value is None or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, got {text[:40]!r}")
        return value

    return parse


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {text[:40]!r}")
        return text

    return parse


def _name(text: str) -> str:
    if not re.fullmatch(NAME_PATTERN, text):
        raise ValueError(f"is not a project name (lowercase letters, digits, '-'): {text[:40]!r}")
    return text


def _id(text: str) -> str:
    if not 1 <= len(text) <= 64:
        raise ValueError("must be an id of 1 to 64 characters")
    return text


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time with its offset (``Z`` or ``+02:00``), as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"must be an ISO 8601 date-time such as 2026-05-01T12:00:00Z, got {text[:40]!r}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"needs a time zone (Z or an offset such as +02:00), got {text[:40]!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"is out of range: {text[:40]!r}") from None


def _types(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"unknown event type {unknown[0][:40]!r}; known: {', '.join(sorted(EVENT_TYPES))}"
        )
    return list(dict.fromkeys(names))


def limit(default: int, maximum: int) -> QueryParam:
    return QueryParam(
        "limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        _integer(1, maximum), f"How many items at most (1 to {maximum}).", default=default,
    )  # fmt: skip


OFFSET: Final = QueryParam(
    "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    _integer(0, MAX_OFFSET), "How many items to skip (for the next page: `next_offset`).",
    default=0,
)  # fmt: skip
PROJECT: Final = QueryParam(
    "project", {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}, _name,
    "Only this project's (a configured project's name).",
)  # fmt: skip
STATE: Final = QueryParam(
    "state", {"type": "string", "enum": list(INCIDENT_STATES)}, _choice(INCIDENT_STATES),
    "Only open or only resolved incidents (default: both).",
)  # fmt: skip
TYPES: Final = QueryParam(
    "type",
    {"type": "array", "items": {"type": "string", "enum": sorted(EVENT_TYPES)}, "minItems": 1},
    _types, "Only events of these types, comma-separated.",
    extra={"style": "form", "explode": False},
)  # fmt: skip
SINCE: Final = QueryParam(
    "since", {"type": "string", "format": "date-time"}, parse_instant,
    "Only events at or after this instant (ISO 8601 with a time zone).",
)  # fmt: skip
WINDOW: Final = QueryParam(
    "window", {"type": "string", "enum": list(WINDOWS), "default": "24h"}, _choice(list(WINDOWS)),
    "How far back: 24h, 7d or 30d.", default="24h",
)  # fmt: skip
MINUTES: Final = QueryParam(
    "minutes", {"type": "integer", "minimum": 1, "maximum": 1440, "default": 15},
    _integer(1, 1440), "The window events are counted over, in minutes (1 to 1440).",
    default=15,
)  # fmt: skip
INCIDENT: Final = QueryParam(
    "incident", {"type": "string", "minLength": 1, "maxLength": 64}, _id,
    "The incident's id.", required=True,
)  # fmt: skip


def parse_query(request: web.Request, params: Sequence[QueryParam]) -> Mapping[str, Any]:
    """The declared parameters' values (their defaults where absent); 400 for anything
    unknown, repeated, missing or malformed, naming the parameter."""
    declared = {p.name: p for p in params}
    query = request.query
    for name in query:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise bad_parameter(name[:40], f"is not a parameter here (known: {known})")
    values: dict[str, Any] = {}
    for p in params:
        given = query.getall(p.name, [])
        if len(given) > 1:
            raise bad_parameter(p.name, "is given more than once")
        if not given:
            if p.required:
                raise bad_parameter(p.name, "is required")
            values[p.name] = p.default
            continue
        try:
            values[p.name] = p.parse(given[0])
        except ValueError as exc:
            raise bad_parameter(p.name, str(exc)) from None
    return values
