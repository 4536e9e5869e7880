"""Prometheus text format → the flat ``{name: value}`` that ProbeResult carries.

Which samples become metrics (the choice the probe documents):
- an unlabelled sample is kept under its sample name (``process_cpu_seconds_total``);
- labelled samples of one name are summed under that bare name
  (``http_requests_total{code="200"}`` + ``{code="500"}`` → ``http_requests_total``),
  unless the same name also has an unlabelled sample, which wins;
- histogram buckets (``le``) and summary quantiles (``quantile``) are skipped: summing
  cumulative buckets or quantiles means nothing, and their ``_sum``/``_count`` remain;
- NaN and ±Inf are dropped, and so is a sum that overflows (every metric in a
  ProbeResult is finite).

Parsing costs about 1.8 ms per 9 KB (DESIGN §9), some 20× a whole health check, so this
runs once per scrape with no second pass; only a failed parse pays for locating the line.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from agents.probe_parse import BadAnswer, clip

_SKIP_LABELS = ("le", "quantile")


def prometheus_metrics(text: str) -> dict[str, float]:
    plain: dict[str, float] = {}
    summed: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for name, labels, raw, *_ in family.samples:
                value = float(raw)  # the parser gives an int for "0": metrics are floats
                if not math.isfinite(value):
                    continue
                if not labels:
                    plain[name] = value
                elif not any(k in labels for k in _SKIP_LABELS):
                    summed[name] = summed.get(name, 0.0) + value
    except Exception as exc:  # the parser raises ValueError, but also others on odd input
        raise BadAnswer(_locate(text, exc)) from None
    if summed:
        # Labelled samples can sum past the largest float (two of 1e308): such a total
        # means nothing either, and every metric in a ProbeResult is finite.
        kept = {name: total for name, total in summed.items() if math.isfinite(total)}
        kept.update(plain)
        return kept
    return plain


def _locate(text: str, exc: Exception) -> str:
    """Name the first line that does not parse on its own; the parser does not say."""
    for number, line in enumerate(text.splitlines(), 1):
        try:
            for _ in text_string_to_metric_families(line + "\n"):
                pass
        except Exception as line_exc:
            why = str(line_exc) or type(line_exc).__name__
            return f'invalid Prometheus text at line {number} ("{clip(line, 40)}"): {clip(why, 80)}'
    return f"invalid Prometheus text: {clip(str(exc) or type(exc).__name__, 120)}"
