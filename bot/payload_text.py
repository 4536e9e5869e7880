"""Event payload values as text for people: payloads are JSON, so anything may arrive."""

from __future__ import annotations

import json
from typing import Any


def text_of(value: Any, limit: int = 500) -> str:
    """A payload value as one line of text, at most ``limit`` characters."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int | float):
        text = f"{value:g}"
    else:
        text = json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
