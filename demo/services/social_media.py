"""Social Media Automator: publishes scheduled posts to social networks."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from demo.services.domain import Database, Domain, Log, Profile
from orch_kit import Check

NETWORKS = ("linkedin", "instagram", "x", "facebook", "tiktok")
ACCOUNTS = ("@acme_corp", "@acme_careers", "@globex_news", "@initech_hq")
FAILURES = {
    "facebook": "Graph API error 190 (OAuthException): Error validating access token",
    "x": "429 Too Many Requests (rate limit window resets in 12 min)",
    "instagram": "media upload failed: 400 Unsupported aspect ratio",
    "linkedin": "503 Service Unavailable from api.linkedin.com",
    "tiktok": "video still processing after 120 s",
}


class SocialMedia(Domain):
    name = "social-media"
    version = "3.2.5"
    profile = Profile(
        cpu=(18, 7), memory=(44, 3), error_rate=(0.01, 0.006), rps=(5, 2), latency_ms=(260, 80)
    )
    database = Database(host="10.0.3.15", name="scheduler")
    data_dir = "/var/lib/social-media"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.failure_rate = self.drift(0.012, 0.008)  # threshold warn 0.05
        self.posts_scheduled = 64
        self.posts_published = 0
        self.publish_failures = 0
        self.due = 1
        self._next_id = 10_000 + rng.randint(0, 5_000)

    def _post_id(self) -> str:
        self._next_id += 1
        return f"p-{self._next_id}"

    def _failure_rate(self, t: float, error_spike: bool) -> float:
        rate = self.failure_rate.at(t)
        # An error spike here is a spike of failed publishes (about 0.20, still wobbling).
        return rate + 0.19 if error_spike else rate

    def startup(self, log: Log) -> None:
        log(
            "info",
            f"oauth tokens refreshed for {len(ACCOUNTS)} accounts on {len(NETWORKS)} networks",
        )
        log("info", f"scheduler loaded {self.posts_scheduled} scheduled posts")

    def work(self, t: float, log: Log, error_spike: bool) -> None:
        if self.chance(0.35):
            self.posts_scheduled += 1
            when = timedelta(minutes=self.rng.randint(10, 4000))
            log(
                "info",
                f"scheduled post_id={self._post_id()} network={self.pick(NETWORKS)} in {when}",
            )
        self.due += self.rng.choice((0, 0, 1))
        if self.due and self.posts_scheduled and self.chance(0.6):
            self.due -= 1
            self.posts_scheduled -= 1
            network, post = self.pick(NETWORKS), self._post_id()
            if self.chance(self._failure_rate(t, error_spike)):
                self.publish_failures += 1
                level = "error" if error_spike else "warning"
                log(
                    level,
                    f"publish failed post_id={post} network={network}: {FAILURES[network]}"
                    f"{'' if error_spike else ' (will retry in 5 min)'}",
                )
            else:
                self.posts_published += 1
                log(
                    "info",
                    f"published post_id={post} network={network} "
                    f"account={self.pick(ACCOUNTS)} latency_ms={self.rng.randint(300, 1900)}",
                )
        if self.chance(0.02):
            log("warning", "x api rate limit: 12 requests left in window, backing off 15 s")

    def idle(self, t: float, log: Log, why: str) -> None:
        self.due = min(1000, self.due + self.rng.choice((0, 0, 1)))
        if why == "paused" and self.chance(0.1):
            log("info", f"publishing paused; {self.due} posts due")

    def metrics(self, t: float, error_spike: bool) -> dict[str, float]:
        return {
            "posts_scheduled": self.posts_scheduled,
            "posts_published": self.posts_published,
            "publish_failures": self.publish_failures,
            "publish_failure_rate": round(self._failure_rate(t, error_spike), 4),
            "queue_depth": self.due,
        }

    def status(self) -> Mapping[str, Any]:
        return {"queue_depth": self.due, "posts_scheduled": self.posts_scheduled}

    def checks(self, t: float) -> dict[str, list[Check]]:
        return {
            "networks:reachable": [
                Check("pass", component_type="component", observed_value=len(NETWORKS))
            ]
        }
