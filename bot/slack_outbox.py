"""SlackOutbox: the one sender of every Slack write (DESIGN §5).

Writes wait in the store (``storage.slack_store``) until Slack has taken them, so nothing
is lost to a restart, a Slack outage or a crash: the next process (or another replica)
sends what is pending.  One loop claims due channels from the store and sends each
channel's next write in its own task, so a slow or rate-limited channel holds up only
itself.  The store keeps the pacing: after a write a channel waits ``per_channel_interval``
(about 1 message/s per channel, Slack's own limit for chat.postMessage), fleet-wide.
Besides incident cards, their edits and thread lines, and storm messages, it posts
messages of their own (the digest, a chart's caption: kind ``message``) and the files
that follow them (kind ``upload``, ``bot.slack_upload``).  Lines in a storm message's
thread go out batched, up to 20 a message (``bot.storm.storm_batch``).

What each failure does (``bot.slack_failures.classify``); a row is never deleted:

- **429**: that channel only waits ``Retry-After`` seconds; others go on.
- **5xx, network errors, timeouts, Slack's internal errors**: the channel backs off
  exponentially (1 s, 2 s, 4 s… capped at ``backoff_cap``) and retries the same write,
  so the channel's order, hence each incident's order, is kept.
- **auth errors** (invalid_auth, token_revoked…): nothing can be sent.  The whole outbox
  pauses and retries slowly (``slow_retry_s`` doubling to ``slow_retry_cap``); the
  writes stay pending and go out in order once the token works (a fixed token needs a
  restart of orch, which re-reads it).  **channel errors** (channel_not_found,
  not_in_channel, is_archived): the same, for that channel only: inviting the bot fixes
  it without a restart.  ``health()`` says so meanwhile.
- **errors of this one message** (invalid_blocks, msg_too_long, message_not_found…):
  the row becomes ``failed`` (kept, with its error, for an operator) and the channel goes
  on; an update or reply whose card failed is failed too.  An unknown error is retried
  as transient, up to ``max_attempts``, then failed.

slack_sdk does not retry on its own here: the outbox talks through a twin of the given
client with no retry handlers (``RateLimitErrorRetryHandler`` would sleep inside a call,
blind to per-channel pacing, and the connection-error handler would resend a post the
outbox cannot see).  Delivery is at least once: a write whose answer was lost (network
error after Slack took it, a crash before the store recorded it) is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any, Final

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import Clock
from agents.lifecycle import cancel_and_wait
from bot.render import TemplateOutputError
from bot.slack_failures import Failure, classify
from bot.slack_upload import upload_file
from bot.storm import STORM_LINE, STORM_WINDOW_S, render_storm, storm_batch
from storage.base import Store
from storage.postgres_connect import unreachable
from storage.slack_store import SlackOutboxRow

log = logging.getLogger(__name__)

# How many times (about a second apart) a card waits for the card whose thread it joins.
PARENT_WAITS = 10
# An update_card row whose payload carries this key may be skipped when a newer edit of
# the same card is queued behind it (bot.dependency_cards marks the root's edits so).
SUPERSEDABLE: Final = "supersedable"


class SlackOutbox:
    def __init__(
        self,
        store: Store,
        client: AsyncWebClient,
        clock: Clock,
        *,
        per_channel_interval: float = 1.0,
        owner: str | None = None,
        poll_interval: float = 1.0,
        max_in_flight: int = 8,
        hold_s: float = 60.0,
        backoff_cap: float = 60.0,
        slow_retry_s: float = 60.0,
        slow_retry_cap: float = 900.0,
        max_attempts: int = 10,
        storm_window_s: float = STORM_WINDOW_S,
        stop_grace_s: float = 5.0,
    ) -> None:
        """``owner`` names this instance in channel holds (unique per start by default).
        ``poll_interval`` bounds how long writes queued by another replica wait."""
        self._store = store
        self._client = client
        self._api = AsyncWebClient(
            token=client.token, base_url=client.base_url, timeout=client.timeout, ssl=client.ssl,
            proxy=client.proxy, session=client.session, logger=client.logger, retry_handlers=[],
        )  # fmt: skip
        self._clock = clock
        self._interval = per_channel_interval
        self.owner = owner or f"slack-outbox-{uuid.uuid4().hex[:12]}"
        self._poll = poll_interval
        self._max_in_flight = max_in_flight
        self._hold_s = hold_s
        self._backoff_cap = backoff_cap
        self._slow, self._slow_cap = slow_retry_s, slow_retry_cap
        self._max_attempts = max_attempts
        self._storm_window_s = storm_window_s
        self._stop_grace_s = stop_grace_s
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._passes = 0
        self._asleep = False
        self._paused_until: float | None = None  # auth failed: monotonic time to try again
        self._auth_problem: str | None = None
        self._auth_failures = 0
        self._problems: dict[str, str] = {}  # channel -> what is wrong there now
        # row id -> storm thread lines sent along with it (bot.storm.storm_batch)
        self._batched: dict[int, list[SlackOutboxRow]] = {}
        self.stats = {"sent": 0, "deferred": 0, "failed": 0, "folded": 0}
        # Failed Web API calls by ``Failure.kind`` (rate_limited = 429), for telemetry.
        self.api_errors: Counter[str] = Counter()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="slack-outbox")

    async def stop(self) -> None:
        """No new claims; let sends in flight finish (within the grace), then hand the
        channels back so another replica or the next start goes on at once."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._sending:
            _done, late = await asyncio.wait(set(self._sending), timeout=self._stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            await self._store.slack_release(self.owner)
        except Exception:  # the holds then expire on their own
            log.exception("slack outbox: could not release its channels")

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the loop has made a full pass after this call and sleeps with no
        send in flight (tests: "everything due by now has been tried")."""
        start = self._passes
        self.wake()
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    self._passes > start
                    and self._asleep
                    and not self._sending
                    and not self._wake.is_set()
                )
            )

    # -- health ------------------------------------------------------------------------
    def health(self) -> str:
        """ "ok", "auth failed: …" or "degraded: …" (what is wrong right now)."""
        if self._auth_problem is not None:
            return f"auth failed: {self._auth_problem}"
        if self._problems:
            shown = sorted(self._problems.items())[:3]
            more = f" (+{len(self._problems) - 3} channels)" if len(self._problems) > 3 else ""
            return "degraded: " + "; ".join(f"{e} on {c}" for c, e in shown) + more
        return "ok"

    async def check(self) -> str | None:
        """Readiness (``bot.web`` ReadyCheck): None when Slack writes flow."""
        status = self.health()
        return None if status == "ok" else status

    # -- the loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        store_away = False  # logged once per database outage, not a traceback a poll
        while True:
            self._asleep = False
            try:
                delay = await self._pass()
                if store_away:
                    log.info("slack outbox: the database answers again; sending resumes")
                    store_away = False
            except Exception as exc:  # the store is away: keep the rows, try again later
                if not unreachable(exc):
                    log.exception("slack outbox: claiming failed; will retry")
                elif not store_away:
                    log.warning("slack outbox: database unreachable (%s); messages wait in"
                                " it and go out when it is back", type(exc).__name__)  # fmt: skip
                    store_away = True
                delay = self._poll
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """``sleep_or_wake``, but announcing the sleep only once its deadline is set: a
        test that advances a FakeClock right after ``settle`` must find it registered."""
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.sleep(0)  # both tasks take their first step (clock.sleep: heappush)
            self._passes += 1
            self._asleep = True
            async with self._changed:
                self._changed.notify_all()
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
        self._wake.clear()  # before the pass: a wake during it makes another pass

    async def _pass(self) -> float:
        """Start what is due; return how long to sleep."""
        if self._paused_until is not None:
            left = self._paused_until - self._clock.monotonic()
            if left > 0:
                return left
            self._paused_until = None
        room = self._max_in_flight - len(self._sending)
        if room > 0:
            rows = await self._store.slack_claim(self.owner, limit=room, hold_s=self._hold_s)
            for row in rows:
                task = asyncio.create_task(self._send(row), name=f"slack-send:{row.id}")
                self._sending.add(task)
            if rows and len(rows) == room:
                return 0.0  # maybe more is due: come back once a slot frees
        due = await self._store.slack_next_due()
        if due is None:
            return self._poll
        wait = (due - await self._store.db_now()).total_seconds()
        # Due already yet not claimed: held elsewhere, in flight, or waiting for its card.
        return self._poll if wait <= 0 else min(wait, self._poll)

    async def _send(self, row: SlackOutboxRow) -> None:
        try:
            await self._deliver(row)
        except Exception:
            log.exception("slack outbox: %s %s could not be settled", row.kind, row.id)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._sending.discard(task)  # before waking: settle() must see it gone
            self.wake()

    async def _deliver(self, row: SlackOutboxRow) -> None:
        try:
            answer = await self._call(row)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            await self._failed(row, classify(exc))
            return
        except (TemplateOutputError, SlackRequestError) as exc:  # retrying cannot help
            await self._done(row, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        finally:
            batched = self._batched.pop(row.id, [])
        if answer is None:
            return  # settled without a call (folded, or failed for want of a card)
        await self._store.slack_mark_sent(
            row.id, self.owner, ts=answer.get("ts"), posted_channel=answer.get("channel"),
            pace_s=self._interval,
        )  # fmt: skip
        for mate in batched:  # after the pacing is set: their release changes nothing
            await self._done(mate, "folded", f"sent with row {row.id}")
        self.stats["sent"] += 1
        self._problems.pop(row.channel, None)
        self._auth_problem, self._auth_failures = None, 0

    async def _call(self, row: SlackOutboxRow) -> dict[str, Any] | None:
        """One Web API call for ``row``; None when the row was settled without one."""
        self._api.session = self._client.session  # SlackService sets it when it starts
        message: dict[str, Any] = dict(row.payload.get("message") or {})
        if row.kind in ("post_card", "message"):
            return await self._post_card(row, message)
        if row.kind == "storm":
            storm = await self._store.slack_storm(row.storm_id or 0)
            if storm is None:
                await self._done(row, "failed", "storm not found")
                return None
            message = render_storm(storm.lines, self._storm_window_s)
            if storm.ts is None:
                response = await self._api.chat_postMessage(channel=row.channel, **message)
            else:  # more cards folded after it was posted: it lists them all now
                channel = storm.posted_channel or storm.channel
                response = await self._api.chat_update(channel=channel, ts=storm.ts, **message)
            return response.data  # type: ignore[return-value]
        card = await self._store.slack_card(row.incident_id or "")
        if card is None or card.ts is None:
            await self._done(row, "failed", "card not posted")
            return None
        if row.kind == "upload":  # a file, shared after its message (bot.slack_upload)
            return await upload_file(self._api, card.channel, row.payload)
        if row.kind == "update_card":
            if card.folded:  # the storm message is its card; it shows no state to edit
                await self._done(row, "folded", f"folded into storm {card.storm_id}")
                return None
            if row.payload.get(SUPERSEDABLE) and await self._superseded(row):
                await self._done(row, "folded", "superseded by a newer edit of its card")
                return None
            response = await self._api.chat_update(channel=card.channel, ts=card.ts, **message)
        else:
            if row.payload.get(STORM_LINE) is not None:  # lines queued behind it go along
                message, self._batched[row.id] = await storm_batch(self._store, row, message)
            response = await self._api.chat_postMessage(
                channel=card.channel, thread_ts=card.thread_ts, **message
            )
        return response.data  # type: ignore[return-value]

    async def _post_card(
        self, row: SlackOutboxRow, message: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A card; one that belongs in another card's thread (an approval asked about an
        incident whose card was still queued) waits for that card, a while."""
        channel = row.channel
        parent_id = row.payload.get("thread_of")
        if parent_id and "thread_ts" not in message:
            parent = await self._store.slack_card(str(parent_id))
            if parent is not None and parent.thread_ts is not None:
                channel, message = parent.channel, {**message, "thread_ts": parent.thread_ts}
            elif row.attempts < PARENT_WAITS:
                await self._store.slack_defer(row.id, self.owner, 1.0, "waiting for its card")
                return None
            # else: the incident's card never went out; the channel is better than nothing
        return (await self._api.chat_postMessage(channel=channel, **message)).data  # type: ignore[return-value]

    async def _superseded(self, row: SlackOutboxRow) -> bool:
        """A newer edit of the same card waits behind ``row``: it shows at least as much
        (rendered later), so ``row`` need not be sent (20 dependents folding into one
        card in a burst cost one or two edits, not twenty seconds of the channel)."""
        pending = await self._store.slack_rows(channel=row.channel, state="pending")
        return any(r.kind == "update_card" and r.incident_id == row.incident_id
                   and r.id > row.id for r in pending)  # fmt: skip

    async def _done(self, row: SlackOutboxRow, state: str, error: str) -> None:
        await self._store.slack_mark_done(row.id, self.owner, state=state, error=error)
        self.stats[state] += 1
        if state == "failed":
            log.error("slack outbox: %s %s failed for good: %s", row.kind, row.id, error)

    async def _failed(self, row: SlackOutboxRow, failure: Failure) -> None:
        kind = failure.kind
        self.api_errors[kind] += 1
        if kind == "unknown":
            kind = "message" if row.attempts + 1 >= self._max_attempts else "transient"
        if kind == "message":
            await self._done(row, "failed", failure.error)
            return
        if kind == "rate_limited":
            delay = failure.retry_after or 1.0
        elif kind == "transient":
            delay = min(self._backoff_cap, 2.0**row.attempts)
        else:
            delay = min(self._slow_cap, self._slow * 2.0 ** min(row.attempts, 16))
        await self._store.slack_defer(row.id, self.owner, delay, failure.error)
        self.stats["deferred"] += 1
        log.warning("slack outbox: %s on %s (%s %s); retry in %gs",
                    failure.error, row.channel, row.kind, row.id, delay)  # fmt: skip
        if kind == "auth":
            self._auth_problem = failure.error
            self._auth_failures += 1
            pause = min(self._slow_cap, self._slow * 2.0 ** min(self._auth_failures - 1, 16))
            self._paused_until = self._clock.monotonic() + pause
        else:
            self._problems[row.channel] = failure.error
