"""Redaction: secrets and personal data out of text before orch stores it, posts it to
Slack, writes it to its logs or sends it to Claude (DESIGN §6, OWASP LLM Top 10).

One table, ``RULES``, of (name, pattern, replacement), applied in order by ``redact``.
Each match becomes a typed placeholder such as ``[REDACTED:slack_token]``, so a reader
still sees *what* was there.  Order matters: whole structures (a PEM block, a Slack
hook URL, a URL's password) go before the tokens they may contain, typed detectors go
before the generic ones, and the generic ``key=value`` and high-entropy rules leave
values that are already placeholders alone.  ``redact`` is idempotent.

What is caught: PEM private keys; Slack incoming-webhook and interaction ``response_url``s
(``hooks.slack.com/…``, ``/commands/…``, ``/actions/…``); passwords in URLs and DSNs;
``Bearer``/``Basic`` credentials; JWTs; Slack tokens (``xox?-``, ``xoxe.xox?-``,
``xapp-``); AWS access key ids; well-known vendor tokens (GitHub, GitLab, Stripe,
Anthropic, OpenAI, Google, SendGrid, npm, PyPI, Twilio); ``password=``/``secret:``/
``token=``/``api_key=``… values; e-mail addresses; phone numbers (international ``+``
numbers with 8–15 digits, North American and ``0``-trunk national formats with
separators); and generic high-entropy secrets (``_high_entropy``).

Choices, so evidence survives:

- Timestamps, dates, versions, IP addresses, ports, durations, pids and plain numbers are
  not phone numbers (only the shapes above are).
- UUIDs are kept: they are ids (requests, orders, jobs) that an analysis quotes, not
  credentials.  So are hex digests and ids after a word saying what they are
  (``sha256:…``, ``commit …``, ``trace_id=…``, ``image …``).  A bare hex string of 32+ characters
  is redacted: a request id lost is cheaper than an API key kept.
- Identifiers are kept: words joined by ``-``/``_`` (``email-blast-worker-7d9f8b6c5-x2k4p``,
  ``MAILER_BATCH_SIZE_1000``), CamelCase names, numbers with a prefix (``user_1234…``).
  The high-entropy rule (``looks_secret``) wants 20+ characters with letters and digits
  whose Shannon entropy is near that of random text of the same length and alphabet
  (about 97 % of random base62 tokens of 20–48 characters are caught).

Yelp's ``detect-secrets`` was considered and not used: it is built to scan source files
(its entropy plugins look only at quoted strings, and its ad-hoc line scan reports every
word), its per-line API may verify candidates by calling the vendors' APIs (sending the
secret out), and it would bring ``requests`` and four more packages for a dozen vendor
patterns that are kept here instead.  The entropy limits below start from its defaults
(4.5 bits for base64, 3.0 for hex) and scale the base64 one for shorter tokens.

Redaction is a safety net, not a guarantee: it catches the well-known shapes.  Extend
the table (and its tests in ``tests/test_redact.py``) rather than adding a second one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
# ``SLACK_BOT_TOKEN=``, ``aws_secret_access_key=``.  The key must end at a word boundary,
# so ``tokens_used=12``, ``token_count=3`` and ``access_key_id=`` are left alone.
_SECRET_KEY: Final = re.compile(
    r"""(?ix)
    \b(?P<key>[a-z0-9_-]*?(?P<kind>password|passwd|pwd|secret|token|api[_-]?key
        |access[_-]?key|secret[_-]?key|private[_-]?key|signing[_-]?key|credentials?))\b
    (?P<sep>["']?\s*[=:]\s*)
    (?P<value>"""
    + _NOT_PLACEHOLDER
    + r"""(?:"[^"\n]*"|'[^'\n]*'|[^\s"',;&}\]]+))"""
)
_KIND_ALIASES: Final = {
    "passwd": "password", "pwd": "password", "apikey": "api_key", "accesskey": "access_key",
    "secretkey": "secret_key", "privatekey": "private_key", "signingkey": "signing_key",
    "credentials": "credential",
}  # fmt: skip


def _key_value(match: re.Match[str]) -> str:
    kind = match.group("kind").lower().replace("-", "_")
    kind = _KIND_ALIASES.get(kind.replace("_", ""), kind)
    value = match.group("value")
    quote = value[0] if value[:1] in ('"', "'") else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{placeholder(kind)}{quote}"


# Well-known token formats, by vendor: the prefix says what it is.
_VENDOR_TOKEN: Final = re.compile(
    r"""(?x)
    (?<![A-Za-z0-9_-])(?:
      (?P<github_token>gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})
    | (?P<gitlab_token>gl(?:pat|dt|rt|ptt|cbt|imt|oas|agent|ft|soat)-[A-Za-z0-9_-]{20,})
    | (?P<stripe_key>(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,})
    | (?P<anthropic_key>sk-ant-[A-Za-z0-9_-]{20,})
    | (?P<openai_key>sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})
    | (?P<google_api_key>AIza[0-9A-Za-z_-]{35})
    | (?P<sendgrid_key>SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,})
    | (?P<npm_token>npm_[A-Za-z0-9]{36})
    | (?P<pypi_token>pypi-AgE[A-Za-z0-9_-]{50,})
    | (?P<twilio_key>(?:AC|SK)[0-9a-f]{32})
    )(?![A-Za-z0-9_-])
    """
)


def _vendor(match: re.Match[str]) -> str:
    return placeholder(match.lastgroup or "token")


# -- phone numbers ---------------------------------------------------------------------
# +44 20 7946 0958, +1 (415) 555-2671, +33 1 23 45 67 89, +14155552671: a ``+``, then
# digit groups with single separators; 8 to 15 digits in all (E.164).  (415) 555-2671,
# 415-555-2671, 1-800-555-0199: North American shapes (area and exchange codes never
# start with 0 or 1).  020 7946 0958, 07700 900123: national numbers with a 0 trunk
# prefix and at least one separator.  Nothing with a letter, ``:``, ``/`` or another
# digit group glued on either side, so times, dates, versions and IPs stay.
_PHONE: Final = re.compile(
    r"""(?x)
    (?<![\w+.:/-])(?:
      \+\d{1,3}(?:[ .-]?\(\d{1,5}\)|[ .-]?\d{1,6}){1,6}
    | (?:1[ .-])?\([2-9]\d{2}\)[ .-]?[2-9]\d{2}[ .-]\d{4}
    | (?:1[ .-])?[2-9]\d{2}(?P<sep>[ .-])[2-9]\d{2}(?P=sep)\d{4}
    | 0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}
    )(?![\w+/-]|[.:]\d)
    """
)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+") and not 8 <= digits <= 15:
        return text
    return placeholder("phone")


# -- generic high-entropy secrets ------------------------------------------------------
MIN_LEN: Final = 20  # shorter tokens are not judged (too little text to tell)
_B64_CHARS: Final = r"A-Za-z0-9+/_\-"
_ENTROPY_CANDIDATE: Final = re.compile(
    rf"(?<![{_B64_CHARS}])[{_B64_CHARS}]{{{MIN_LEN},}}={{0,2}}(?![{_B64_CHARS}])"
)
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# A word just before the token saying it is a digest, a revision or an id, not a secret.
_ID_CONTEXT: Final = re.compile(
    r"""(?ix)
    (?:\b(?:sha(?:1|224|256|384|512)?|md5|digest|checksum|hash|etag|commit|revision|rev
          |build|image|version|release|deploy\w*|uuid|id)
      |\b(?:trace|span|request|req|correlation|message|msg|job|order|event|run)[_-]?id)
    ["']?\s*[:=@#]?\s*["']?\s*$
    """
)
HEX_MIN_LEN: Final = 32
HEX_ENTROPY: Final = 3.0  # detect-secrets' HexHighEntropyString default
B64_ENTROPY: Final = 4.5  # detect-secrets' Base64HighEntropyString default (long tokens)
# Shorter tokens cannot reach 4.5 bits: below the cap, a token must come within this many
# bits of what random text of its length and alphabet has (log2 of the distinct
# characters it would be expected to show); 98 % of random tokens do.
ENTROPY_MARGIN: Final = 0.6
DIGIT_SHARE: Final = 0.6
SEPARATOR_EVERY: Final = 10  # a - or _ this often or more: words joined, an identifier
# Mixed-case tokens mostly made of words are CamelCase names (``HttpRequestHandler2``);
# random base62 text of 20+ characters is under this share in 99 % of cases.
_WORD: Final = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")
WORD_SHARE: Final = 0.75


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def _random_entropy(length: int, alphabet: int) -> float:
    """About the entropy of ``length`` random characters drawn from ``alphabet``."""
    distinct = alphabet * (1 - (1 - 1 / alphabet) ** length)
    return math.log2(distinct)


def looks_secret(token: str) -> bool:
    """Whether ``token`` (base64/hex characters, no spaces) looks like a random secret."""
    body = token.rstrip("=")
    if len(body) < MIN_LEN:
        return False
    if not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
        return False
    if _UUID.fullmatch(body):
        return False
    if _HEX.fullmatch(body):
        return len(body) >= HEX_MIN_LEN and shannon_entropy(body) >= HEX_ENTROPY
    if (body.count("-") + body.count("_")) * SEPARATOR_EVERY >= len(body):
        return False
    if sum(c.isdigit() for c in body) >= DIGIT_SHARE * len(body):
        return False  # a number with a prefix (user_1234…): random base64 is 16 % digits
    upper, lower = body.lower() != body, body.upper() != body
    if upper and lower and sum(map(len, _WORD.findall(body))) >= WORD_SHARE * len(body):
        return False
    alphabet = 10 + 26 * upper + 26 * lower + 4 * bool(set(body) & set("+/-_"))
    limit = min(B64_ENTROPY, _random_entropy(len(body), alphabet) - ENTROPY_MARGIN)
    return shannon_entropy(body) >= limit


def _high_entropy(match: re.Match[str]) -> str:
    token = match.group(0)
    before = match.string[max(0, match.start() - 40) : match.start()]
    if _ID_CONTEXT.search(before):
        return token
    if token.startswith("/") or "//" in token:
        # A path: judge each segment, so /var/lib/app/releases/… stays readable.
        return "/".join(
            placeholder("secret") if segment and looks_secret(segment) else segment
            for segment in token.split("/")
        )
    return placeholder("secret") if looks_secret(token) else token


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
    # Slack incoming webhooks and interaction/slash-command response_urls
    # (hooks.slack.com/services|actions|commands/…) are bearer credentials.
    Rule(
        "slack_url",
        re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>)\]]+", re.IGNORECASE),
        placeholder("slack_url"),
    ),
    # scheme://user:password@host -> scheme://user:[REDACTED:password]@host; the password
    # runs to the last @ before the host (an unencoded @ in a password is common).
    Rule(
        "url_password",
        re.compile(
            r"\b(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@?#]*):"
            + _NOT_PLACEHOLDER
            + r"[^\s/?#]+@(?=[^\s@/?#]*(?:[/?#\s]|$))",
            re.IGNORECASE,
        ),
        lambda m: f"{m.group('head')}:{placeholder('password')}@",
    ),
    Rule(
        "bearer",
        re.compile(
            r"\b(?P<scheme>Bearer|Basic)\s+" + _NOT_PLACEHOLDER + r"[A-Za-z0-9._~+/=-]{8,}",
            re.IGNORECASE,
        ),
        lambda m: f"{m.group('scheme')} {placeholder(m.group('scheme').lower())}",
    ),
    Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        placeholder("jwt"),
    ),
    Rule(
        "slack_token",
        re.compile(r"\b(?:xox[a-z](?:\.xox[a-z])?|xapp)-[A-Za-z0-9-]{8,}"),
        placeholder("slack_token"),
    ),
    Rule(
        "aws_access_key",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
        placeholder("aws_access_key"),
    ),
    Rule("vendor_token", _VENDOR_TOKEN, _vendor),
    Rule("secret_value", _SECRET_KEY, _key_value),
    Rule(
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        placeholder("email"),
    ),
    Rule("phone", _PHONE, _phone),
    Rule("high_entropy", _ENTROPY_CANDIDATE, _high_entropy),
)


PASSES: Final = 3


def redact(text: str) -> str:
    """``text`` with every match of ``RULES`` replaced by its typed placeholder.

    Applied until nothing changes (at most ``PASSES`` times), since a placeholder can
    complete a shape an earlier rule did not see (``415-555-2671.<secret>``): clean text
    costs one pass, text with secrets two."""
    for _ in range(PASSES):
        redacted = text
        for rule in RULES:
            redacted = rule.pattern.sub(rule.replacement, redacted)
        if redacted == text:
            break
        text = redacted
    return text
