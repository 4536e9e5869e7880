"""Redaction (agents/redact.py): each kind of secret and personal data becomes its typed
placeholder, and ordinary log text (timestamps, versions, ports, ids, names) stays as it
is.  The basic cases also live in tests/test_executor.py; these cover the kinds added for
Claude (vendor tokens, generic high-entropy secrets, more phone and URL shapes) and run
the simulated fleet's own logs through it.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.redact import RULES, looks_secret, redact, shannon_entropy
from demo.services.chatbot import Chatbot
from demo.services.domain import Domain
from demo.services.email_blast import EmailBlast
from demo.services.social_media import SocialMedia

REPLACED: Mapping[str, tuple[str, str]] = {
    "slack user token": ("xoxp-1234567890-1234567890-abcdef", "[REDACTED:slack_token]"),
    "slack refresh token": ("xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OTAtYWJj", "[REDACTED:slack_token]"),
    "slack app token": ("connect with xapp-1-A0123456789-1234567890-abcdef0123 now",
                        "connect with [REDACTED:slack_token] now"),
    "response_url (actions)": ("https://hooks.slack.com/actions/T0ABC/123456/AbCdEf",
                               "[REDACTED:slack_url]"),
    "response_url (commands)": ('url="https://hooks.slack.com/commands/T0ABC/98765/ZyXw"',
                                'url="[REDACTED:slack_url]"'),
    "dsn password with @": ("postgresql://mailer:p@ss@db.internal:5432/mail?sslmode=require",
                            "postgresql://mailer:[REDACTED:password]@db.internal:5432/mail"
                            "?sslmode=require"),
    "dsn key values": ("host=db user=orch password=hunter2 dbname=mail",
                       "host=db user=orch password=[REDACTED:password] dbname=mail"),
    "amqp url": ("amqp://guest:guest123@rabbit:5672/", "amqp://guest:[REDACTED:password]@rabbit:5672/"),
    "aws secret key": ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       "aws_secret_access_key=[REDACTED:access_key]"),
    "basic auth": ("Authorization: Basic dXNlcjpwYXNzd29yZA==",
                   "Authorization: Basic [REDACTED:basic]"),
    "github": ("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 leaked", "[REDACTED:github_token] leaked"),
    "gitlab": ("glpat-AbCdEfGhIjKlMnOpQrSt", "[REDACTED:gitlab_token]"),
    "stripe": ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "charge with [REDACTED:stripe_key]"),
    "anthropic": ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-yz", "[REDACTED:anthropic_key]"),
    "openai": ("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx012345", "[REDACTED:openai_key]"),
    "google": ("key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "key=[REDACTED:google_api_key]"),
    "sendgrid": ("SG.abcdefghijklmnop1234.abcdefghijklmnopqrstuv12", "[REDACTED:sendgrid_key]"),
    "twilio": ("sid AC0123456789abcdef0123456789abcdef", "sid [REDACTED:twilio_key]"),
    "high entropy after a word": ("cache key Zx8Kq2LmP9vR4tW7yB1nC5dF3gH6jA0s rejected",
                                  "cache key [REDACTED:secret] rejected"),
    "high entropy cookie": ("session=AbCdEf0123456789GhIjKlMnOpQrStUvWxYz; Path=/",
                            "session=[REDACTED:secret]; Path=/"),
    "high entropy base64url": ("sig Zx8Kq2LmP9vR4t_W7yB1nC5dF3gH6jA0s-Q", "sig [REDACTED:secret]"),
    "high entropy in a path": ("GET /reset/Zx8Kq2LmP9vR4tW7yB1nC5dF3gH6jA0s/confirm 404",
                               "GET /reset/[REDACTED:secret]/confirm 404"),
    "bare hex secret": ("X-Signature 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
                        "X-Signature [REDACTED:secret]"),
    "email with plus": ("to=jane.doe+promo@example.co.uk", "to=[REDACTED:email]"),
    "phones international": (
        "+1 (415) 555-2671, +33 1 23 45 67 89, +49 30 1234567, +91 98765 43210, +14155552671",
        "[REDACTED:phone], [REDACTED:phone], [REDACTED:phone], [REDACTED:phone], "
        "[REDACTED:phone]",
    ),
    "phones national": ("415-555-2671 / 415.555.2671 / 1-800-555-0199 / 020 7946 0958 / "
                        "07700 900123.",
                        "[REDACTED:phone] / [REDACTED:phone] / [REDACTED:phone] / "
                        "[REDACTED:phone] / [REDACTED:phone]."),
}  # fmt: skip

KEPT = [
    "2026-01-01T12:00:00Z 10.0.0.1 v1.2.3 pid 4123 latency 123.45 ms port 8101",
    "2026-01-01 12:00:00.123+00:00 worker on 0.0.0.0:8080 tz +0000 offset +05:30",
    "01/02/2026 12:00 | 2026.01.02 | 20260101120000 | 1767225600 | 1767225600123",
    "GET /api/v1/users/123e4567-e89b-12d3-a456-426614174000/orders -> 500 in 1234 ms",
    "request_id=9f86d081884c7d659a2feaa0c55ad015 trace_id: 4bf92f3577b34da6a3ce929d0e0e4736",
    "deployed commit 3f786850e387550fdab836ed7e6dc881de23001b (image sha256:"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855)",
    "pod email-blast-worker-7d9f8b6c5-x2k4p on k8s-node-pool-a-1a2b3c4d-9xz8 restarted",
    "MAILER_BATCH_SIZE_1000_LIMIT_20000 send_batch_failed_for_campaign_2026",
    "HttpRequestHandlerFactory2 in com.example.mailer.SendGridClient v2.31.0-beta.1",
    "/var/lib/app/releases/20260101120000/current/bin/server exited with 137",
    'Traceback (most recent call last): File "/app/mailer/send.py", line 42, in send_batch',
    "ERROR connection pool exhausted (20/20) after 30000ms at db.internal:5432",
    "numbers 1000 2000 3000, 100 200 3000, 12 1234 5678, 2026-1234-5678, 1,234,567",
    "smtp=250 2.0.0 OK; 421 4.7.0 Temporary System Problem; +5 retries; 99.95% ok",
    "redis://redis:6379/0 and postgresql://db:5432/mail (no password)",
    "[REDACTED:email] [REDACTED:slack_token] [REDACTED:secret] [REDACTED:phone]",
]


@pytest.mark.parametrize("name", sorted(REPLACED))
def test_each_kind_becomes_its_typed_placeholder(name: str) -> None:
    text, expected = REPLACED[name]
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_log_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_the_rules_are_one_named_table() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    for name in ("slack_url", "url_password", "slack_token", "vendor_token", "phone",
                 "high_entropy"):  # fmt: skip
        assert name in names
    # typed detectors first, the generic catch-all last
    assert names.index("vendor_token") < names.index("secret_value")
    assert names[-1] == "high_entropy"


def test_random_tokens_are_secrets_and_identifiers_are_not() -> None:
    rng = random.Random(6)
    b62 = string.ascii_letters + string.digits
    tokens = ["".join(rng.choice(b62) for _ in range(rng.randint(20, 48))) for _ in range(500)]
    hex_tokens = ["".join(rng.choice("0123456789abcdef") for _ in range(40)) for _ in range(200)]
    assert sum(map(looks_secret, tokens)) >= 0.95 * len(tokens)
    assert all(map(looks_secret, hex_tokens))
    identifiers = [
        "email-blast-worker-7d9f8b6c5-x2k4p",
        "campaign-2026-01-spring-sale-v2",
        "node_modules_cache_v2_linux_x64_build_123",
        "X509CertificateVerifierImpl",
        "123e4567-e89b-12d3-a456-426614174000",
        "20260101120000000000",
        "user_12345678901234567890",
    ]
    assert not any(map(looks_secret, identifiers))
    assert shannon_entropy("") == 0.0 and shannon_entropy("aaaa") == 0.0


def test_the_simulated_fleets_logs_lose_only_their_email_addresses() -> None:
    """Hundreds of realistic lines: only the leads' addresses are personal data."""
    email = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
    lines: list[str] = []
    domains: list[Domain] = [EmailBlast(random.Random(1)), Chatbot(random.Random(2)),
                             SocialMedia(random.Random(3))]  # fmt: skip

    def log(level: str, message: str) -> None:
        lines.append(message)

    for domain in domains:
        domain.startup(log)
        for t in range(300):
            domain.work(float(t), log, t % 7 == 0)
    assert len(lines) > 500 and any(email.search(line) for line in lines)
    for line in lines:
        assert redact(line) == email.sub("[REDACTED:email]", line), line


def test_two_hundred_poisoned_lines_come_out_clean() -> None:
    """The size of one analysis' log fetch (no timing asserted: a sanity run)."""
    secrets = ["xoxb-1234567890-abcdefghijkl", "jane.doe@example.com", "+44 20 7946 0958",
               "Zx8Kq2LmP9vR4tW7yB1nC5dF3gH6jA0s", "AKIAIOSFODNN7EXAMPLE"]  # fmt: skip
    lines = [f"2026-01-01T12:00:{i % 60:02d}Z ERROR batch {i} failed for {secrets[i % 5]} "
             f"after {i * 10} ms on worker-{i}" for i in range(200)]  # fmt: skip
    out = [redact(line) for line in lines]
    assert not any(secret in line for line in out for secret in secrets)
    assert all(f"batch {i} failed" in line for i, line in enumerate(out))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(string.printable[:95]), max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
