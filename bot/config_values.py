"""Value helpers for ``projects.yml``: durations, names, loopback URLs, suggestions.

Kept apart from the models so that the cross-object rules (``bot.config_rules``) and the
models (``bot.config``) can both use them without importing each other.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def parse_duration(value: Any) -> float:
    """``10s``, ``5m``, ``1.5h``, ``250ms`` or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 10s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 10s, 5m or 1h, got {value!r}")
    # YAML reads `.inf` as a float; an infinite interval would silently stop probing.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be a finite time greater than zero, got {value!r}")
    return seconds


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is 127.0.0.0/8, ::1 or ``localhost``."""
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (a bound address, a Host header, a URL's host)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
