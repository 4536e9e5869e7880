"""Render Slack payloads (and their terminal twins) from the jinja2 templates in ``templates/``.

Safety model (DESIGN §8; the anti-pattern is pasting values into JSON as strings):

- ``StrictUndefined``: a missing variable raises ``UndefinedError``, never renders empty.
- Every ``{{ }}`` must end in one of this module's filters.  The environment's
  ``finalize`` refuses any other output, so a value that skipped escaping fails the
  render instead of reaching Slack.
- ``esc`` (JSON templates) is the value filter: control and bidi characters removed,
  Slack's control characters escaped (``&`` → ``&amp;``, ``<`` → ``&lt;``, ``>`` →
  ``&gt;``; so ``<!channel>`` in a value is inert text), cut to a limit with "…", then
  JSON-encoded (``json.dumps``) without the surrounding quotes.  Templates therefore write
  ``"text": "*{{ project|esc(80) }}* is down"``: the value is a JSON-encoded piece of a
  JSON string literal, so quotes, backslashes and newlines in it cannot end the literal,
  and one literal can combine several values with the template's own mrkdwn.  Escaping
  comes before JSON-encoding: the other order would let ``\\u003c`` decode back to ``<``.
- Only templates produce markup: mentions go through ``mention`` (ids matching
  ``[A-Z0-9]+`` only), button values and block ids through ``opaque``.
- The output is parsed with ``json.loads`` (duplicate keys refused) and checked against
  Block Kit limits (``bot.blockkit``); ``render_blocks`` never returns a payload that
  fails either.

``render_text`` renders the ``.txt.j2`` twins for the terminal and logs: no Slack or JSON
escaping there (they are not Slack), but the same cleaning and truncation.  Never send its
output to Slack; every JSON template carries its own escaped fallback ``text``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Undefined

from bot.blockkit import check_message, check_view, slack_len

TEMPLATES_DIR: Final = Path(__file__).resolve().parents[1] / "templates"
DEFAULT_LIMIT: Final = 300  # a short value; templates ask for more where a text is long
ELLIPSIS: Final = "…"

# C0/C1 controls except tab and newline (NUL, ESC: terminal escape sequences), and the
# bidi overrides/isolates and marks that can make a value display as something else
# ("Trojan Source").  Homoglyphs stay: they are ordinary letters and Slack shows them.
_INVISIBLE: Final = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SLACK_ID: Final = re.compile(r"[A-Z0-9]{2,32}")
_OPAQUE: Final = re.compile(r"[A-Za-z0-9._:-]{1,255}")

STATUS_ICONS: Final = {"healthy": "🟢", "degraded": "🟠", "down": "🔴", "unknown": "⚪"}
SEVERITY_ICONS: Final = {"critical": "🔴", "warning": "🟠"}
EVENT_ICONS: Final = {
    "project.status_changed": "🔁", "project.flapping": "〰️", "metric.anomaly": "📈",
    "metric.recovered": "📉", "incident.opened": "🚨", "incident.updated": "✏️",
    "incident.resolved": "✅", "action.requested": "🛠️", "action.started": "▶️",
    "action.succeeded": "✔️", "action.failed": "❌", "action.verified": "✅",
    "approval.requested": "🙋", "approval.granted": "👍", "approval.denied": "👎",
    "approval.expired": "⌛", "remediation.suspended": "⏸️", "escalation.raised": "📣",
    "analysis.completed": "🧠",
}  # fmt: skip


class TemplateOutputError(Exception):
    """A template produced something orch must not send; says which template and why."""

    def __init__(self, template: str, problems: list[str]) -> None:
        super().__init__(f"{template}: " + "; ".join(problems))
        self.template = template
        self.problems = problems


class UnsafeValueError(ValueError):
    """A value reached the output without a sanctioned filter, or failed a strict one."""


class _Safe(str):
    """Output of this module's filters: the only thing ``finalize`` lets through."""


def clean(text: str) -> str:
    return _INVISIBLE.sub("", text.replace("\r\n", "\n"))


def slack_escape(text: str) -> str:
    # & first, or the & of &lt; would be escaped again.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate_text(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` (UTF-16 units, as Slack may count), else cut with "…"."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if slack_len(text) <= limit:
        return text
    budget, cut = limit - 1, 0  # one unit for the ellipsis
    for index, char in enumerate(text):
        budget -= 2 if ord(char) > 0xFFFF else 1
        if budget < 0:
            break
        cut = index + 1
    return text[:cut] + ELLIPSIS


def _truncate_escaped(text: str, limit: int) -> str:
    cut = truncate_text(text, limit)
    if cut is text:
        return text
    # Never leave half an entity ("&am…"): every & in escaped text starts one.
    body = cut[:-1]
    amp = body.rfind("&")
    if amp != -1 and ";" not in body[amp:]:
        body = body[:amp]
    return body + ELLIPSIS


def _as_text(value: Any) -> str:
    # None and containers are template bugs: "None" or "{'a': 1}" on a card helps nobody.
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsafeValueError(f"expected text or a number, got {type(value).__name__}")
    return _number(value)


def _number(value: Any, digits: int | None = None) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsafeValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        return "?"
    if digits is None:
        return str(value) if isinstance(value, int) else f"{value:g}"
    return f"{value:.{digits}f}"


def format_duration(seconds: Any) -> str:
    """``4m 12s``, ``2h 05m``, ``3d 4h``: compact, for "down for …"; None is "?"."""
    if seconds is None:
        return "?"
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise UnsafeValueError(f"expected seconds, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _utc(value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise UnsafeValueError(f"expected an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _checked(pattern: re.Pattern[str], what: str, value: Any) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UnsafeValueError(f"not a valid {what}: {str(value)[:80]!r}")
    return value


def _finalize(value: Any) -> Any:
    if isinstance(value, _Safe):
        return value
    raise UnsafeValueError(
        f"{str(value)[:80]!r} was output without esc/num/pct/duration/when/mention/opaque"
    )


def _filters(encode: Callable[[str], str], for_slack: bool) -> dict[str, Callable[..., _Safe]]:
    """The filter set of one environment; ``encode`` makes cleaned text safe for it."""

    def safe(text: str) -> _Safe:
        return _Safe(encode(text))

    def esc(value: Any, limit: int = DEFAULT_LIMIT) -> _Safe:
        text = clean(_as_text(value))
        if for_slack:
            return safe(_truncate_escaped(slack_escape(text), limit))
        # A terminal or log line is one line per entry: a newline in a value could forge
        # a second, fake entry.
        return safe(truncate_text(text.replace("\n", " ").replace("\t", " "), limit))

    def when(value: Any) -> _Safe:
        moment = _utc(value)
        plain = f"{moment:%Y-%m-%d %H:%M:%S} UTC"
        if not for_slack:
            return safe(plain)
        # Slack shows this in each reader's own time zone; the plain text is the fallback.
        epoch = math.floor(moment.timestamp())
        return safe(f"<!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{plain}>")

    def mention(value: Any) -> _Safe:
        ident = _checked(_SLACK_ID, "Slack user or user-group id", value)
        if ident[0] == "S":
            return safe(f"<!subteam^{ident}>" if for_slack else f"@{ident}")
        if ident[0] in "UW":
            return safe(f"<@{ident}>" if for_slack else f"@{ident}")
        raise UnsafeValueError(f"not a user (U…, W…) or user-group (S…) id: {ident!r}")

    def pct(value: Any) -> _Safe:
        return safe("—" if value is None else _number(value, 2) + " %")

    def pick(table: dict[str, str], default: str) -> Callable[[Any], _Safe]:
        return lambda key: safe(table.get(key, default) if isinstance(key, str) else default)

    filters: dict[str, Callable[..., _Safe]] = {
        "esc": esc,
        "num": lambda value, digits=None: safe(_number(value, digits)),
        "pct": pct,
        "duration": lambda value: safe(format_duration(value)),
        "when": when,
        "mention": mention,
        "opaque": lambda value: safe(_checked(_OPAQUE, "opaque id", value)),
        "status_icon": pick(STATUS_ICONS, "⚪"),
        "severity_icon": pick(SEVERITY_ICONS, "🟠"),
        "event_icon": pick(EVENT_ICONS, "•"),
    }
    return {name: _strict(function) for name, function in filters.items()}


def _strict(function: Callable[..., _Safe]) -> Callable[..., _Safe]:
    # Jinja hands filters an Undefined instead of raising; turning it into text raises
    # StrictUndefined's UndefinedError, so a missing variable never becomes "?" or "—".
    def checked(*args: Any, **kwargs: Any) -> _Safe:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, Undefined):
                str(arg)
        return function(*args, **kwargs)

    return checked


def _json_piece(text: str) -> str:
    # The inside of a JSON string literal: quotes, backslashes and controls escaped.
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _environment(encode: Callable[[str], str], for_slack: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        undefined=StrictUndefined,
        autoescape=False,  # JSON, not HTML: escaping is the filters' job
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    # Built-in filters stay (``length``, ``batch``, ``upper``…): what they output is plain
    # text, which ``finalize`` refuses until it has been through ``esc``.
    env.filters.update(_filters(encode, for_slack))
    return env


JSON_ENV: Final = _environment(_json_piece, for_slack=True)
TEXT_ENV: Final = _environment(lambda text: text, for_slack=False)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def render_blocks(template_name: str, **context: Any) -> dict[str, Any]:
    """Render a ``.json.j2`` template to a parsed, validated Slack payload.

    A home or modal view (``"type"`` home/modal) is checked as a view, anything else as a
    message.  Raises ``TemplateOutputError`` (template name, every problem) rather than
    return something Slack would reject; ``jinja2.UndefinedError`` for a missing variable.
    """
    if not template_name.endswith(".json.j2"):
        raise ValueError(f"{template_name}: render_blocks takes a .json.j2 template")
    template = JSON_ENV.get_template(template_name)
    try:
        output = template.render(**context)
    except UnsafeValueError as exc:
        raise TemplateOutputError(template_name, [str(exc)]) from exc
    try:
        payload = json.loads(output, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        raise TemplateOutputError(template_name, [f"output is not valid JSON: {exc}"]) from exc
    if not isinstance(payload, dict):
        raise TemplateOutputError(template_name, ["output is not a JSON object"])
    is_view = payload.get("type") in ("home", "modal")
    problems = check_view(payload) if is_view else check_message(payload)
    if problems:
        raise TemplateOutputError(template_name, problems)
    return payload


def render_text(template_name: str, **context: Any) -> str:
    """Render a ``.txt.j2`` template for the terminal or a log (not for Slack)."""
    if not template_name.endswith(".txt.j2"):
        raise ValueError(f"{template_name}: render_text takes a .txt.j2 template")
    try:
        return TEXT_ENV.get_template(template_name).render(**context).strip("\n")
    except UnsafeValueError as exc:
        raise TemplateOutputError(template_name, [str(exc)]) from exc


def template_names() -> list[str]:
    """Every renderable template (partials excluded); the tests render each one."""
    return sorted(
        name
        for name in JSON_ENV.list_templates(extensions=["j2"])
        if not name.startswith("partials/")
    )
