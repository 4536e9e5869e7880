"""Redaction: secrets and personal data out of text before orch stores it, posts it to
Slack or sends it to Claude (DESIGN §6, OWASP LLM Top 10).

One table, ``RULES``, of (name, pattern, replacement), applied in order by ``redact``.
Each match becomes a typed placeholder such as ``[REDACTED:slack_token]``, so a reader
still sees *what* was there.  Order matters: whole structures (a PEM block, a Slack
hook URL, a URL's password) go before the tokens they may contain, and the generic
``key=value`` rule leaves values that are already placeholders alone.

Redaction is a safety net, not a guarantee: it catches the well-known shapes.  Extend
the table (and its tests in ``tests/test_executor.py``) rather than adding a second one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

Replacement = str | Callable[[re.Match[str]], str]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    replacement: Replacement


_NOT_PLACEHOLDER: Final = r"(?!\[REDACTED:)"
# Keys whose value is a secret: ``password=``, ``DB_PASSWORD:``, ``"client_secret": "..."``,
# ``SLACK_BOT_TOKEN=``.  The key must end at a word boundary, so ``tokens_used=12`` and
# ``token_count=3`` are left alone.
_SECRET_KEY: Final = re.compile(
    r"""(?ix)
    \b(?P<key>[a-z0-9_-]*?(?P<kind>password|passwd|pwd|secret|token|api[_-]?key))\b
    (?P<sep>["']?\s*[=:]\s*)
    (?P<value>"""
    + _NOT_PLACEHOLDER
    + r"""(?:"[^"\n]*"|'[^'\n]*'|[^\s"',;&}\]]+))"""
)


def _key_value(match: re.Match[str]) -> str:
    kind = match.group("kind").lower().replace("-", "_")
    kind = {"passwd": "password", "pwd": "password", "apikey": "api_key"}.get(kind, kind)
    value = match.group("value")
    quote = value[0] if value[:1] in ('"', "'") else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{placeholder(kind)}{quote}"


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*\Z)",
            re.DOTALL,
        ),
        placeholder("private_key"),
    ),
    # Slack incoming webhooks and interaction response_urls are bearer credentials.
    Rule(
        "slack_url",
        re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>)\]]+", re.IGNORECASE),
        placeholder("slack_url"),
    ),
    # scheme://user:password@host -> scheme://user:[REDACTED:password]@host
    Rule(
        "url_password",
        re.compile(r"\b(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s@/]+@", re.IGNORECASE),
        lambda m: f"{m.group('head')}:{placeholder('password')}@",
    ),
    Rule(
        "bearer",
        re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        lambda m: f"{m.group('scheme')} {placeholder(m.group('scheme').lower())}",
    ),
    Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        placeholder("jwt"),
    ),
    Rule(
        "slack_token",
        re.compile(r"\b(?:xox[abposr]|xapp)-[A-Za-z0-9-]{8,}"),
        placeholder("slack_token"),
    ),
    Rule(
        "aws_access_key",
        re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
        placeholder("aws_access_key"),
    ),
    Rule("secret_value", _SECRET_KEY, _key_value),
    Rule(
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        placeholder("email"),
    ),
    # +44 20 7946 0958, +14155552671, (415) 555-2671, 415-555-2671, 030 1234 5678.  Dates
    # (2026-01-01), times, versions and IP addresses do not have these shapes.
    Rule(
        "phone",
        re.compile(
            r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
            r"\d{3,4}[ .-]\d{4}(?![\w.-])"
            r"|(?<![\w+])\+\d{8,15}\b"
        ),
        placeholder("phone"),
    ),
)


def redact(text: str) -> str:
    """``text`` with every match of ``RULES`` replaced by its typed placeholder."""
    for rule in RULES:
        text = rule.pattern.sub(rule.replacement, text)
    return text
