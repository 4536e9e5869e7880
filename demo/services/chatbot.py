"""Chatbot: answers customer conversations with an LLM and escalates some to humans."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from demo.services.domain import Database, Domain, Log, Profile
from orch_kit import Check

INTENTS = (
    "billing_question",
    "order_status",
    "password_reset",
    "refund_request",
    "shipping_delay",
    "plan_upgrade",
    "cancel_subscription",
)
CHANNELS = ("web", "web", "whatsapp", "slack_connect", "email")
MODEL = "support-bot-v3"


class Chatbot(Domain):
    name = "chatbot"
    version = "1.9.0"
    profile = Profile(
        cpu=(35, 10), memory=(47, 3), error_rate=(0.006, 0.004), rps=(9, 4), latency_ms=(420, 120)
    )
    database = Database(host="10.0.3.14", name="conversations")
    data_dir = "/var/lib/chatbot"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.response_time = self.drift(850, 300)  # threshold warn 2000 ms
        self.escalation_rate = self.drift(0.07, 0.03)
        self.conversations = 0
        self.escalations = 0
        self.active = 12
        self.waiting_for_agent = 2

    def _conversation_id(self) -> str:
        return f"c-{self.rng.getrandbits(32):08x}"

    def _response_ms(self, t: float, error_spike: bool) -> float:
        # Retries against a failing upstream make answers slower, not just rarer.
        return self.response_time.at(t) * (1.5 if error_spike else 1.0)

    def startup(self, log: Log) -> None:
        log("info", f"loaded model={MODEL} prompt_version=2026-01-rc2 tools=4")
        log("info", "websocket gateway listening, channels=web,whatsapp,slack_connect,email")

    def work(self, t: float, log: Log, error_spike: bool) -> None:
        started = self.rng.choice((0, 0, 1, 1, 1, 2, 3))
        finished = min(self.active, self.rng.choice((0, 1, 1, 1, 2, 3)))
        self.active = max(3, self.active + started - finished)
        self.conversations += started
        self.waiting_for_agent = max(0, self.waiting_for_agent - self.rng.choice((0, 0, 1)))
        for _ in range(finished):
            cid, intent = self._conversation_id(), self.pick(INTENTS)
            if self.chance(self.escalation_rate.at(t)):
                self.escalations += 1
                self.waiting_for_agent += 1
                log("info", f"conversation={cid} escalated to human (reason={intent}, queue=tier2)")
            else:
                log(
                    "info",
                    f"conversation={cid} channel={self.pick(CHANNELS)} intent={intent} "
                    f"turns={self.rng.randint(2, 9)} resolved=true "
                    f"response_time_ms={self._response_ms(t, error_spike):.0f}",
                )
        if self.chance(0.03):
            slow = self.response_time.high * 1.4
            log("warning", f"llm completion slow: {slow:.0f} ms (model={MODEL}, tokens=812)")
        if error_spike and self.chance(0.8):
            log(
                "error",
                f"conversation={self._conversation_id()} reply failed: upstream model "
                "returned 502 Bad Gateway (attempt 3/3), sent fallback message",
            )

    def idle(self, t: float, log: Log, why: str) -> None:
        self.waiting_for_agent = min(500, self.waiting_for_agent + self.rng.choice((0, 0, 1)))
        if why == "paused" and self.chance(0.1):
            log("info", f"intake paused; {self.waiting_for_agent} conversations handed to agents")

    def metrics(self, t: float, error_spike: bool) -> dict[str, float]:
        return {
            "conversations": self.conversations,
            "active_conversations": self.active,
            "escalation_rate": round(self.escalation_rate.at(t), 4),
            "response_time_ms": round(self._response_ms(t, error_spike), 1),
            "queue_depth": self.waiting_for_agent,
        }

    def status(self) -> Mapping[str, Any]:
        return {
            "queue_depth": self.waiting_for_agent,
            "active_conversations": self.active,
            "model": MODEL,
        }

    def checks(self, t: float) -> dict[str, list[Check]]:
        ms = round(self.response_time.at(t), 1)
        return {
            "llm:responseTime": [
                Check("pass", component_type="component", observed_value=ms, observed_unit="ms")
            ]
        }
