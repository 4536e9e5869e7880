"""``/metrics`` as Prometheus text: the same numbers as the JSON answer, one gauge each.

Rendered by prometheus_client from a throw-away registry per request, so the exposition
format (escaping, float formatting) is the library's, not ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

# The classic text format: names are sanitised to the legacy character set below, so the
# output is valid 0.0.4, which every Prometheus and parser reads (1.0.0 needs newer ones).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def sanitise(name: str) -> str:
    """A legal Prometheus metric name: ``[a-zA-Z_:][a-zA-Z0-9_:]*``."""
    clean = _INVALID.sub("_", name) or "_"
    return f"_{clean}" if clean[0].isdigit() else clean


def _numbers(metrics: Mapping[str, object]) -> Iterator[tuple[str, str, float]]:
    seen: set[str] = set()
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # strings and nested objects have no gauge form
        if math.isnan(value):
            continue
        clean = sanitise(name)
        if clean in seen:
            continue  # two JSON names that sanitise alike: first one wins
        seen.add(clean)
        yield name, clean, float(value)


class _Snapshot:
    """A collector over one dict of numbers (prometheus_client's custom-collector API)."""

    def __init__(self, metrics: Mapping[str, object], namespace: str) -> None:
        self._metrics = metrics
        self._prefix = f"{sanitise(namespace)}_" if namespace else ""

    def collect(self) -> Iterator[Metric]:
        for original, clean, value in _numbers(self._metrics):
            yield GaugeMetricFamily(f"{self._prefix}{clean}", f"{original} (orch contract)", value)


def render(metrics: Mapping[str, object], namespace: str = "") -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(metrics, namespace))
    return generate_latest(registry)


def wants_text(accept: str) -> bool:
    """Does this ``Accept`` header prefer Prometheus text over JSON?

    Explicit ``text/plain`` or ``application/openmetrics-text`` (a Prometheus server asks
    for both) outranks ``application/json`` or a wildcard of the same or lower q.
    """
    best_text = best_json = 0.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, raw = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(raw)
                except ValueError:
                    q = 0.0
        if media in ("text/plain", "application/openmetrics-text"):
            best_text = max(best_text, q)
        elif media in ("application/json", "application/*", "*/*"):
            best_json = max(best_json, q)
    return best_text > best_json
