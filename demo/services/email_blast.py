"""Email Blast: sends outreach campaigns to leads through an SMTP relay.

Its log names recipients (``to=jane.doe@acme-corp.com``) on purpose: real mailers do, and
orch must redact such lines before they reach Slack or Claude.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from demo.services.domain import Database, Domain, Log, Profile
from orch_kit import Check

PEOPLE = (
    "jane.doe",
    "m.rossi",
    "priya.sharma",
    "tom.becker",
    "li.wei",
    "a.kowalski",
    "carlos.mendez",
    "fatima.zahra",
    "o.nilsson",
    "sam.okafor",
    "emma.dubois",
)
COMPANIES = (
    "acme-corp.com",
    "globex.io",
    "initech.com",
    "umbrella-health.net",
    "hooli.xyz",
    "stark-ind.com",
    "wayne-enterprises.org",
    "cyberdyne.ai",
)
CAMPAIGNS = ("q1-reengagement", "webinar-invite-feb", "product-launch-v3", "trial-nurture-d7")
RELAY = "smtp-relay.sendgrid.net:587"


class EmailBlast(Domain):
    name = "email-blast"
    version = "2.4.1"
    profile = Profile(
        cpu=(28, 9), memory=(45, 3), error_rate=(0.008, 0.005), rps=(22, 6), latency_ms=(180, 50)
    )
    database = Database(name="outreach")
    data_dir = "/var/lib/email-blast"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.send_rate = self.drift(14, 5)
        self.bounce_rate = self.drift(0.03, 0.015)  # threshold warn 0.08
        self.response_rate = self.drift(0.08, 0.03)
        self.emails_sent = 0
        self.bounces = 0
        self.replies = 0
        self.queue_depth = 800
        self.campaign = self.pick(CAMPAIGNS)
        self._batch = 0

    def address(self) -> str:
        return f"{self.pick(PEOPLE)}@{self.pick(COMPANIES)}"

    def startup(self, log: Log) -> None:
        log("info", f"smtp pool ready: relay={RELAY} connections=8 tls=STARTTLS")
        log("info", f"resuming campaign={self.campaign} queue_depth={self.queue_depth}")

    def _arrivals(self) -> int:
        # New leads keep the queue between a few hundred and ~1500, as a real list import would.
        if self.queue_depth < 300:
            return self.rng.randint(18, 34)
        return self.rng.randint(2, 18) if self.queue_depth > 1500 else self.rng.randint(6, 22)

    def work(self, t: float, log: Log, error_spike: bool) -> None:
        self.queue_depth += self._arrivals()
        sent = min(self.queue_depth, max(0, round(self.send_rate.at(t) + self.rng.gauss(0, 2))))
        self.queue_depth -= sent
        self.emails_sent += sent
        bounced = sum(self.chance(self.bounce_rate.at(t)) for _ in range(sent))
        self.bounces += bounced
        self._batch += sent
        for _ in range(min(sent, self.rng.randint(0, 2))):
            msg_id = f"<{self.rng.getrandbits(48):012x}@mail.emailblast.io>"
            log(
                "info",
                f"sent campaign={self.campaign} to={self.address()} "
                f"message_id={msg_id} smtp=250 2.0.0 OK",
            )
        for _ in range(bounced):
            to = self.address()
            log(
                "warning",
                f"bounce to={to} smtp=550 5.1.1 <{to}>: Recipient address rejected: User unknown",
            )
        if self.chance(self.response_rate.at(t) * 0.2):
            self.replies += 1
            log(
                "info",
                f"reply from={self.address()} campaign={self.campaign} "
                f"classified={self.pick(('interested', 'not_now', 'unsubscribe'))}",
            )
        if error_spike and self.chance(0.8):
            log(
                "error",
                f"smtp send failed to={self.address()} relay={RELAY} "
                'error="421 4.7.0 Temporary System Problem. Try again later" retry_in=60s',
            )
        if self._batch >= 150:
            log(
                "info",
                f"batch done campaign={self.campaign} sent={self._batch} "
                f"queue_depth={self.queue_depth}",
            )
            self._batch = 0

    def idle(self, t: float, log: Log, why: str) -> None:
        self.queue_depth = min(20_000, self.queue_depth + self._arrivals())
        if why == "paused" and self.chance(0.1):
            log("info", f"worker paused; queue_depth={self.queue_depth} (waiting for resume)")

    def metrics(self, t: float, error_spike: bool) -> dict[str, float]:
        return {
            "emails_sent": self.emails_sent,
            "bounce_rate": round(self.bounce_rate.at(t), 4),
            "response_rate": round(self.response_rate.at(t), 4),
            "queue_depth": self.queue_depth,
        }

    def status(self) -> Mapping[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "campaign": self.campaign,
            "emails_sent": self.emails_sent,
        }

    def checks(self, t: float) -> dict[str, list[Check]]:
        return {
            "smtp:connections": [
                Check(
                    "pass",
                    component_type="component",
                    observed_value=8,
                    observed_unit="connections",
                )
            ]
        }
