"""Queueing a digest (and any chart) for Slack: the message, then its PNG.

Both go through the persisted Slack outbox (``bot.slack_outbox``, DESIGN §5): the message
as kind ``message`` and the chart as kind ``upload``, shared in the channel the message
went to once Slack has answered it (``storage.slack_store``).  The outbox's unique
``dedupe_key`` makes queueing idempotent: whoever queues a digest key a second time (a
replica that took over a stale claim, a retry) adds nothing, so Slack gets it once.

The ``digest.posted`` event (id derived from the key, so also once) records what was
posted; the notifier ignores it, the event log shows it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from agents.events import DIGEST_POSTED, Event
from bot.config import Config
from bot.digest import Digest, build_digest
from bot.digest_chart import render_digest_chart
from bot.render import render_blocks
from bot.slack_upload import file_payload
from storage.base import Store
from storage.slack_store import NewSlackMessage, card_key

log = logging.getLogger(__name__)


def daily_key(group: str, day: str) -> str:
    """The key of a group's daily digest: one per (group, local day), ever."""
    return f"digest:{group}:{day}"


def message_with_chart(
    channel: str,
    key: str,
    message: dict[str, Any],
    png: bytes | None,
    *,
    filename: str,
    title: str,
    alt_text: str,
) -> list[NewSlackMessage]:
    """The outbox rows of a message and, when there is one, its chart (after it)."""
    rows = [NewSlackMessage(channel, "message", card_key(key), {"message": message},
                            incident_id=key)]  # fmt: skip
    if png is not None:
        payload = {"file": file_payload(png, filename, title, alt_text)}
        rows.append(NewSlackMessage(channel, "upload", f"upload:{key}", payload, incident_id=key))
    return rows


async def post_digest(
    store: Store,
    config: Config,
    group: str,
    now: datetime,
    *,
    key: str,
    day: str | None = None,
    source: str = "orch",
) -> Digest | None:
    """Build ``group``'s digest as of ``now`` and queue it under ``key``; None when the
    config has no such group.  Returns the digest even when ``key`` was queued before
    (nothing is added then)."""
    orchestrator = config.orchestrators.get(group)
    if orchestrator is None:
        return None
    settings = orchestrator.digest
    known = set(config.project_names())
    names = [p for p in orchestrator.projects if p in known]
    label = day or now.astimezone(settings.zone).date().isoformat()
    digest = await build_digest(
        store, group, orchestrator.channel, names, now, timezone=settings.timezone,
        day_label=label, minutes_saved_per_fix=settings.minutes_saved_per_fix,
    )  # fmt: skip
    message = render_blocks("digest.json.j2", digest=digest)
    png = None
    if digest.projects:  # matplotlib is slow to draw: off the loop
        png = await asyncio.to_thread(render_digest_chart, digest, settings.zone)
    alt = (f"Status of {len(digest.projects)} projects of {group} over the last 24 hours;"
           f" {len(digest.attention)} need attention.")  # fmt: skip
    rows = message_with_chart(
        orchestrator.channel, key, message, png, filename=f"digest-{group}-{label}.png",
        title=f"{group}: the last 24 h", alt_text=alt,
    )  # fmt: skip
    if await store.slack_enqueue(rows):
        await store.append_events([posted_event(digest, key, source)])
        log.info("digest of %s for %s queued for %s", group, label, orchestrator.channel)
    return digest


def posted_event(digest: Digest, key: str, source: str) -> Event:
    payload = {
        "group": digest.group, "day": digest.day, "channel": digest.channel, "key": key,
        "projects": len(digest.projects), "all_clear": digest.all_clear,
        "attention": [p.name for p in digest.attention][:50],
    }  # fmt: skip
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"orch:{key}").hex
    return Event(DIGEST_POSTED, digest.generated_at, source, payload, id=event_id)
