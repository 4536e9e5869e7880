"""Reading probe answers: JSON, the contract documents, ``json_path``.

Each function either returns what it found or raises ``BadAnswer`` whose text says what
was wrong without the ``GET /path:`` prefix (the caller knows the request). The checks
are written for hostile input: any JSON a broken or malicious service can send, up to
1 MiB, yields a reason and never an exception of another type.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agents.probe_fetch import Answer
from agents.probe_result import Level

HEALTH_TYPES = frozenset({"application/health+json", "application/json"})
STANDARD_METRICS = frozenset(
    {"cpu_percent", "memory_percent", "error_rate", "requests_per_second", "latency_p95_ms"}
)
STATES = frozenset({"running", "paused", "starting"})
_LEVELS = {"pass": Level.PASS, "warn": Level.WARN, "fail": Level.FAIL}
_MAX_PROBLEMS = 3  # per endpoint: enough to act on, short enough for a Slack card


class BadAnswer(ValueError):
    pass


def show(value: Any, limit: int = 60) -> str:
    """A short JSON-ish rendering for reasons; never recurses into containers (deep JSON)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if type(value) is int else json.dumps(value, ensure_ascii=False)
    return clip(text, limit)


def clip(text: str, limit: int) -> str:
    """One printable line of at most ``limit`` characters."""
    text = " ".join(text[: limit * 4].split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def snippet(body: bytes, limit: int = 32) -> str:
    """How an answer starts, for "got text/html (starts "<!DOCTYPE html>")"."""
    if not body.strip():
        return "empty"
    return f'starts "{clip(body[: limit * 4].decode("utf-8", "replace"), limit)}"'


def redirect_or_status(answer: Answer) -> str:
    if 300 <= answer.status < 400:
        return f"redirect ({answer.status} to {answer.location or 'nowhere'}) not followed"
    return f"HTTP {answer.status}"


def expect_json_type(answer: Answer, accepted: frozenset[str] | None, wanted: str) -> None:
    """``accepted`` None means application/json or any ``+json`` type."""
    ctype = answer.content_type
    ok = ctype in accepted if accepted is not None else ctype.endswith(("/json", "+json"))
    if not ok:
        raise BadAnswer(
            f"expected {wanted}, got {ctype or 'no content type'} ({snippet(answer.body)})"
        )


def decode(body: bytes, charset: str = "utf-8") -> str:
    try:
        return body.decode(charset)
    except UnicodeDecodeError as exc:
        bad = body[exc.start]
        raise BadAnswer(f"not valid {charset} (byte 0x{bad:02x} at offset {exc.start})") from None
    except LookupError:
        raise BadAnswer(f"unknown charset {charset!r}") from None


def load_json(body: bytes) -> Any:
    text = decode(body)  # JSON is UTF-8 (RFC 8259), whatever the header claims
    if not text.strip():
        raise BadAnswer("empty answer, expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadAnswer(f"invalid JSON at char {exc.pos}: {exc.msg}") from None
    except RecursionError:
        raise BadAnswer("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond the 4300-digit conversion limit
        raise BadAnswer(f"invalid JSON: {exc}") from None


def load_object(body: bytes) -> dict[str, Any]:
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise BadAnswer(f"expected a JSON object, got {show(doc)}")
    return doc


def health_status(doc: dict[str, Any]) -> tuple[Level, str]:
    """The level from a health+json document and, unless pass, what it says is wrong."""
    if "status" not in doc:
        raise BadAnswer('"status" missing')
    raw = doc["status"]
    level = _LEVELS.get(raw) if isinstance(raw, str) else None
    if level is None:
        raise BadAnswer(f'"status" must be pass, warn or fail, got {show(raw)}')
    if level is Level.PASS:
        return level, ""
    detail = f'status "{level}"'
    output = doc.get("output")
    if isinstance(output, str) and output.strip():
        detail += f": {clip(output, 160)}"
    failing = _failing_checks(doc.get("checks"))
    if failing:
        detail += f" (checks: {', '.join(failing)})"
    return level, detail


def _failing_checks(checks: Any) -> list[str]:
    """Names of warn/fail checks in the draft's ``{"name": [{"status": ...}]}`` shape."""
    if not isinstance(checks, dict):
        return []
    found: list[str] = []
    for name, entries in checks.items():
        if not isinstance(entries, list):
            continue
        statuses = {e.get("status") for e in entries if isinstance(e, dict)}
        worst = "fail" if "fail" in statuses else "warn" if "warn" in statuses else None
        if worst:
            found.append(f"{clip(name, 40)} {worst}")
            if len(found) == _MAX_PROBLEMS:
                break
    return found


def number(value: Any) -> float | None:
    """A finite number, or None. ``type() is`` on purpose: JSON true is not 1."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def contract_metrics(doc: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Finite numbers from /metrics; a standard key that is not one is a problem, an odd
    custom key is ignored (services add what they like)."""
    metrics: dict[str, float] = {}
    problems: list[str] = []
    for key, value in doc.items():
        num = number(value)
        if num is not None:
            metrics[key] = num
        elif key in STANDARD_METRICS:
            finite = "finite " if isinstance(value, float) or type(value) is int else ""
            problems.append(f'"{key}" must be a {finite}number, got {show(value)}')
    return metrics, problems


def contract_status(doc: dict[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """(state, version, problems) from /status."""
    raw = doc.get("state")
    state = raw if isinstance(raw, str) and raw in STATES else None
    problems = []
    if "state" not in doc:
        problems.append('"state" missing')
    elif state is None:
        problems.append(f'"state" must be running, paused or starting, got {show(raw)}')
    version = doc.get("version")
    return state, version if isinstance(version, str) else None, problems


def join_problems(label: str, problems: list[str]) -> str:
    more = len(problems) - _MAX_PROBLEMS
    text = "; ".join(problems[:_MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return f"{label}: {text}"


def json_path_get(doc: Any, path: str) -> Any:
    """Follow ``a.b.0.c``: keys into objects, integer indexes into lists."""
    node = doc
    walked: list[str] = []
    for step in path.split("."):
        where = ".".join(walked) or "the top"
        if isinstance(node, dict):
            if step not in node:
                raise BadAnswer(f'json_path "{path}" not found (no "{step}" at {where})')
            node = node[step]
        elif isinstance(node, list):
            try:
                node = node[int(step)]
            except ValueError:
                raise BadAnswer(
                    f'json_path "{path}": {where} is a list, "{step}" is not an index'
                ) from None
            except IndexError:
                raise BadAnswer(
                    f'json_path "{path}" not found ({where} has {len(node)} items)'
                ) from None
        else:
            raise BadAnswer(f'json_path "{path}" not found ({where} is {show(node)})')
        walked.append(step)
    return node


def same_json(actual: Any, expected: Any) -> bool:
    """JSON equality: true is not 1 (Python says it is); 1 and 1.0 are the same number."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    try:
        return bool(actual == expected)
    except RecursionError:  # a deep structure compared with a deep expectation
        return False
