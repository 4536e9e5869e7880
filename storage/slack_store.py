"""The Slack outbox in the store: every Slack write, persisted until it is sent (DESIGN §5).

Tables (``migrations/*/0005_slack.sql``):

- ``slack_outbox``: one row per Slack write, ``pending`` until sent.  ``dedupe_key`` is
  unique, so a redelivered event never queues a write twice, and an incident's card is
  keyed ``card:<incident_id>``, so it is posted once whichever replica or event asks.
  Rows are never deleted: ``sent``, ``failed`` (Slack refused this message for good) and
  ``folded`` (listed in a storm message instead of sent on its own) stay for the record.
- ``slack_messages``: incident -> the channel and ``ts`` of its card, so any replica can
  ``chat.update`` it and reply in its thread.  The row is written when the card is
  queued (``ts`` NULL) and completed when Slack answers.
- ``slack_channels``: per channel, the pacing and back-off deadline (``not_before``) and
  which outbox instance holds it while it sends.  Holding a channel, not a row, keeps a
  channel's writes in order and at ~1/s fleet-wide, whatever the number of replicas.
- ``slack_storms``: grouped messages (``bot.storm`` states the folding rule).

Besides incident cards, two kinds carry messages of their own (migration 0011): a
``message`` (the daily digest, a chart's caption) is posted like a card but never folded
into a storm, and its ``incident_id`` is its own key (``digest:<group>:<day>``), under
which ``slack_messages`` records where it went; an ``upload`` (a PNG, ``files_upload_v2``)
names that key too, waits like a thread reply until the message has a ``ts``, and is shared
in the channel the message was posted to (Slack's upload API needs the channel's id, which
only the posted message tells).

Time is database time (PostgreSQL ``now()``; the SQLite store's injected clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

Kind = Literal["post_card", "update_card", "thread_reply", "storm", "message", "upload"]
KINDS: Final = ("post_card", "update_card", "thread_reply", "storm", "message", "upload")
STATES: Final = ("pending", "sent", "failed", "folded")
# Folding: the defaults of ``bot.storm`` (kept here so the store has no import of bot).
STORM_AFTER: Final = 5
STORM_WINDOW_S: Final = 30.0

# Both stores' readiness of a pending row ``o`` (the SQL is the same in both dialects).
# An update or reply waits for its card's ts (its own, or its storm's).  It is also ready
# when its card failed or was never queued: the sender then fails it, rather than let it
# wait for ever, unsendable, ahead of nothing.  'card:' is ``card_key`` below.
READY_SQL: Final = """(o.kind IN ('post_card', 'storm', 'message')
    OR EXISTS (SELECT 1 FROM slack_messages m LEFT JOIN slack_storms s ON s.id = m.storm_id
               WHERE m.incident_id = o.incident_id AND coalesce(m.ts, s.ts) IS NOT NULL)
    OR EXISTS (SELECT 1 FROM slack_outbox p
               WHERE p.dedupe_key = 'card:' || o.incident_id AND p.state = 'failed')
    OR NOT EXISTS (SELECT 1 FROM slack_messages m WHERE m.incident_id = o.incident_id))"""


# Both stores' order of a channel's ready rows: new top-level messages first (a new card
# or a storm message not posted yet, not one posted into a thread; a posted storm's edits
# keep their place, or a storm's thread lines wait behind its edits), then everything
# else in event order.  An incident's own writes keep their order whatever jumps ahead:
# its card is its first write, and its updates and replies wait for the card's ts
# (READY_SQL); a card posted into a thread (an approval) keeps its place among the
# thread's replies.  Why: a channel sends about one write a second, and a new outage's
# card queued behind other incidents' replies and edits reached Slack seconds late
# (detection bench: status change -> card p99 5.9 s).  ``new_first`` is the dialect's
# test of "new top-level" on the row ``o`` (its payload is JSON text in both stores).
def head_order(new_first: str, order_column: str) -> str:
    return f"(CASE WHEN {new_first} THEN 0 ELSE 1 END), o.{order_column}, o.id"


def card_key(incident_id: str) -> str:
    """The dedupe key of an incident's card: one post per incident, ever."""
    return f"card:{incident_id}"


@dataclass(frozen=True, slots=True)
class NewSlackMessage:
    """A write to queue.  ``payload`` is what the sender needs: the rendered message
    (``{"text", "blocks", "attachments"?}``) and, for a card, its ``line`` (the
    incident's storm line); it is stored as JSON."""

    channel: str  # where it queues (and, for a new card or storm, where it is posted)
    kind: Kind
    dedupe_key: str
    payload: dict[str, Any]
    incident_id: str | None = None  # every kind but storm (message, upload: the message key)
    order_at: datetime | None = None  # the event's ts: order within the channel; None = now

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown Slack outbox kind {self.kind!r}")
        if self.kind != "storm" and not self.incident_id:
            raise ValueError(f"a {self.kind} needs an incident_id")


@dataclass(frozen=True, slots=True)
class SlackOutboxRow:
    id: int  # insertion order; breaks ties of order_at
    channel: str
    kind: str
    dedupe_key: str
    payload: dict[str, Any]
    incident_id: str | None
    storm_id: int | None
    state: str  # pending | sent | failed | folded
    attempts: int
    order_at: datetime
    not_before: datetime
    created: datetime
    sent_at: datetime | None
    ts: str | None  # what Slack answered
    last_error: str | None


@dataclass(frozen=True, slots=True)
class SlackCard:
    """Where an incident's card lives.  A folded incident's card is its storm message."""

    incident_id: str
    channel: str  # the channel id Slack answered once posted; before, the queue channel
    ts: str | None  # None until posted
    thread_ts: str | None
    storm_id: int | None = None

    @property
    def posted(self) -> bool:
        return self.ts is not None

    @property
    def folded(self) -> bool:
        return self.storm_id is not None


@dataclass(frozen=True, slots=True)
class SlackStorm:
    id: int
    channel: str  # as queued; ``posted_channel`` is the id Slack answered
    posted_channel: str | None
    ts: str | None
    lines: tuple[dict[str, Any], ...]  # the folded cards' ``payload["line"]``, oldest first


class SlackStore(Protocol):
    async def slack_enqueue(
        self,
        messages: Sequence[NewSlackMessage],
        *,
        storm_after: int = STORM_AFTER,
        storm_window_s: float = STORM_WINDOW_S,
    ) -> int:
        """Queue ``messages`` in one transaction; return how many were new (a stored
        ``dedupe_key`` is skipped).  A new post_card also records its card (channel, no
        ts) and is folded into the channel's storm when ``storm_after`` or more cards were
        queued for that channel in the last ``storm_window_s`` (state ``folded``; a pending
        ``storm`` row is queued if the storm has none)."""
        ...

    async def slack_claim(
        self, owner: str, *, limit: int = 10, hold_s: float = 60.0
    ) -> list[SlackOutboxRow]:
        """Hold up to ``limit`` due channels for ``hold_s`` and return each one's next
        write: the first pending row in (order_at, id) order that is ready (``READY_SQL``:
        an update or reply once its card has a ts, or once its card failed or if it has
        none, so that the sender fails it).  A channel is due when its
        ``not_before`` passed and nobody else holds it (or the hold expired); on
        PostgreSQL channels are locked FOR UPDATE SKIP LOCKED, so concurrent callers get
        disjoint channels and one message is never handed to two senders."""
        ...

    async def slack_mark_sent(
        self,
        row_id: int,
        owner: str,
        *,
        ts: str | None,
        posted_channel: str | None = None,
        pace_s: float = 0.0,
    ) -> None:
        """The row was sent: ``sent``, ts kept; a card or storm records (posted_channel,
        ts).  Releases the channel until now + ``pace_s``."""
        ...

    async def slack_mark_done(
        self, row_id: int, owner: str, *, state: str, error: str | None = None
    ) -> None:
        """Finish the row without sending it: ``failed`` (kept for an operator) or
        ``folded``; releases the channel at once."""
        ...

    async def slack_defer(self, row_id: int, owner: str, delay_s: float, error: str) -> None:
        """Not sent, try again: attempts + 1, last_error, and the row and its whole channel
        wait until now + ``delay_s`` (the channel, so its order is kept)."""
        ...

    async def slack_release(self, owner: str) -> None:
        """Give back every channel ``owner`` holds (a graceful stop)."""
        ...

    async def slack_card(self, incident_id: str) -> SlackCard | None: ...

    async def slack_storm(self, storm_id: int) -> SlackStorm | None: ...

    async def slack_thread_count(self, incident_id: str) -> int:
        """Thread replies queued for the incident (any state but failed)."""
        ...

    async def slack_next_due(self) -> datetime | None:
        """The earliest moment a pending row may become claimable, None when none is
        pending (readiness and holds are not considered: a hint for sleeping)."""
        ...

    async def slack_rows(
        self, *, channel: str | None = None, state: str | None = None, limit: int = 1000
    ) -> list[SlackOutboxRow]:
        """Rows in (channel, order_at, id) order, for tests and operators."""
        ...


def storm_folds(recent_cards: int, storm_after: int) -> bool:
    """The folding rule both stores apply: fold when ``storm_after`` or more cards were
    already queued for the channel inside the window."""
    return storm_after > 0 and recent_cards >= storm_after


def check_enqueue(messages: Sequence[NewSlackMessage]) -> None:
    if any(m.kind == "storm" for m in messages):
        raise ValueError("storm rows are queued by the store itself")


def check_done_state(state: str) -> None:
    if state not in ("failed", "folded"):
        raise ValueError(f"slack_mark_done takes failed or folded, not {state!r}")
