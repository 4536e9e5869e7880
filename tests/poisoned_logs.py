"""Log lines carrying every kind of secret and personal data a service might print, and
a project /logs endpoint that serves them: what redaction must stop before anything
reaches Claude, the store or orch's logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

SECRETS = {
    "slack bot token": "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack app token": "xapp-1-A0123456789-1234567890123-abcdef0123456789",
    "aws access key": "AKIAIOSFODNN7EXAMPLE",
    "aws secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0T",
    "bearer": "Zm9vYmFyYmF6cXV4LnRva2Vu",
    "pem": "MIIEpAIBAAKCAQEA75xZ",
    "dsn password": "Hunter2-Pa55word",
    "high entropy": "Zx8Kq2LmP9vR4tW7yB1nC5dF3gH6jA0s",
    "response_url": "hooks.slack.com/actions/T0123ABC/4567890123/AbCdEfGh1234",
    "slash command url": "hooks.slack.com/commands/T0123ABC/98765/ZyXwVu987",
    "email": "jane.doe@example.com",
    "phone international": "+44 20 7946 0958",
    "phone us": "(415) 555-2671",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "github": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
}
PLACEHOLDERS = ["slack_token", "aws_access_key", "jwt", "bearer", "private_key", "password",
                "secret", "slack_url", "email", "phone", "stripe_key", "github_token"]  # fmt: skip
POISONED_LOGS = [
    f"posting to Slack with token {SECRETS['slack bot token']}",
    f"socket mode app token={SECRETS['slack app token']}",
    f"S3 upload as {SECRETS['aws access key']} secret {SECRETS['aws secret']}",
    f"session cookie {SECRETS['jwt']}",
    f"upstream call: Authorization: Bearer {SECRETS['bearer']}",
    f"-----BEGIN RSA PRIVATE KEY-----\n{SECRETS['pem']}\n-----END RSA PRIVATE KEY-----",
    f"db: connect postgresql://mailer:{SECRETS['dsn password']}@db:5432/mail refused",
    f"cache key {SECRETS['high entropy']} rejected",
    f"POST https://{SECRETS['response_url']} failed",
    f"POST https://{SECRETS['slash command url']} failed",
    f"bounce to={SECRETS['email']} smtp=550 5.1.1 User unknown",
    f"SMS to {SECRETS['phone international']} and {SECRETS['phone us']} failed",
    f"billing with {SECRETS['stripe']} and deploy key {SECRETS['github']}",
]


@asynccontextmanager
async def logs_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A project's /logs, answering whatever entries the test puts in the list."""
    entries: list[dict[str, Any]] = []

    async def logs(request: web.Request) -> web.Response:
        return web.json_response({"entries": entries})

    app = web.Application()
    app.router.add_get("/logs", logs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(iter(runner.addresses))[1]
    try:
        yield f"http://127.0.0.1:{port}", entries
    finally:
        await runner.cleanup()
