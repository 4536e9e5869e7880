"""Small pieces the Redis Streams bus shares: the client, entry encoding, backoff, errors.

Kept apart from the reader and the bus so each of those stays one job and a test can
exercise these without a server.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from agents.events import Event

# Errors that mean "Redis is away (or restarting)", as opposed to a bug or a bad command:
# these are retried with backoff, never counted against an entry.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


# ...and, while waiting for a condition, a stream that is being recreated.
UNAVAILABLE_OR_GONE: tuple[type[BaseException], ...] = (*UNAVAILABLE, ResponseError)


# on_dead_letter(role, event, error): lets the runtime raise an event users see.
DeadLetterHook = Callable[[str, Event, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What every reader of one bus shares (see ``RedisStreamsBus`` for meanings)."""

    stream: str
    dead_stream: str
    consumer: str
    claim_idle_ms: int
    max_deliveries: int
    block_ms: int
    read_count: int
    dead_maxlen: int
    backoff_base: float
    backoff_cap: float


class BusUnavailable(ConnectionError):
    """Raised by ``publish`` while Redis cannot be reached: the outbox keeps the row."""


def is_nogroup(exc: BaseException) -> bool:
    """The consumer group (or the whole stream) is gone: Redis lost its data.

    Inside a pipeline (the reader's ack-and-read) redis-py wraps the reply as
    ``Command # 1 (XREADGROUP ...) of pipeline caused error: ("NOGROUP ...")``, so the
    code is looked for after that prefix too, not only at the start."""
    return isinstance(exc, ResponseError) and _NOGROUP.match(str(exc)) is not None


_NOGROUP = re.compile(r"(?:.*? of pipeline caused error: [(]?['\"]?)?NOGROUP\b", re.DOTALL)


def is_busygroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSYGROUP")


def make_client(url: str, *, block_ms: int) -> aioredis.Redis:
    """One client (one pool) per bus: each blocked XREADGROUP holds its own connection.

    redis-py retries only once, at once, and only a dropped connection (its default
    retries with up to seconds of backoff inside a single call, which would hold the
    outbox relay's lock): after Redis restarts, every pooled connection is dead, and
    without that one retry each would cost a failed command and a backoff.  Beyond it the
    bus does its own capped, jittered backoff and ``publish`` fails fast so the outbox
    keeps the row.  (A retried XADD cannot add an entry twice: ``PUBLISH_ONCE``.)
    The read timeout exceeds BLOCK so a blocked read is not mistaken for a dead server,
    yet a server that vanished without closing the socket is noticed.
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        socket_connect_timeout=2.0,
        socket_timeout=block_ms / 1000 + 10.0,
        health_check_interval=0,
    )


def new_consumer_name() -> str:
    """Unique per process: hostname-pid-random (a restarted process is a new consumer;
    its predecessor's pending entries are reclaimed by idle time, not by name)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# -- entries ---------------------------------------------------------------------------
# Fields: id and type beside the JSON so a reader can skip unwanted types and known ids
# without decoding the body; "to" (optional) limits a republished entry to the roles
# that had not claimed it, so the reconciler never replays history to other roles.


# Publishing is idempotent per event id for ``dedupe_ms``: every replica's outbox relay
# sweeps the same store, and two of them may publish one row before either marks it (a
# backlog after an outage makes that likely), or a relay may retry an XADD whose reply
# was lost.  A marker key set in the same script as the XADD lets only the first through.
PUBLISH_ONCE = """
if redis.call('set', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""


def published_key(stream: str, event_id: str) -> str:
    return f"{stream}:published:{event_id}"


def flat_fields(fields: dict[FieldT, EncodableT]) -> list[EncodableT]:
    return [x for pair in fields.items() for x in pair]


def entry_fields(event: Event, to: Iterable[str] | None = None) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {
        "id": event.id,
        "type": event.type,
        "event": event.to_json(),
    }
    if to is not None:
        fields["to"] = ",".join(sorted(to))
    return fields


@dataclass(frozen=True, slots=True)
class Entry:
    stream_id: str
    event_id: str
    type: str
    body: str
    to: frozenset[str] | None

    @classmethod
    def parse(cls, stream_id: str, fields: dict[str, str]) -> Entry:
        to = fields.get("to")
        return cls(
            stream_id,
            fields.get("id", ""),
            fields.get("type", ""),
            fields.get("event", ""),
            frozenset(to.split(",")) if to is not None else None,
        )

    def event(self) -> Event:
        """Raises (ValueError, KeyError, TypeError) when the body is not a valid event."""
        return Event.from_dict(json.loads(self.body))


def parse_entries(raw: Any) -> list[Entry]:
    """Entries from an XREADGROUP/XAUTOCLAIM list, dropping ones deleted meanwhile."""
    return [Entry.parse(i, f) for i, f in raw or () if i is not None and f is not None]


async def last_stream_id(redis: aioredis.Redis, stream: str) -> str | None:
    last = await redis.xrevrange(stream, count=1)
    return str(last[0][0]) if last else None


class RecentIds:
    """A bounded memory of ids claimed in this process, oldest forgotten first: lets a
    reader skip a duplicate without asking the store."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Backoff:
    """Exponential, capped, with "equal jitter" (half fixed, half random) so replicas
    that lost Redis together do not reconnect in lockstep."""

    def __init__(
        self, base: float = 0.1, cap: float = 5.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2 ** min(self.failures, 30))  # no float overflow
        self.failures += 1
        return delay / 2 + delay / 2 * self._rng()

    def reset(self) -> None:
        self.failures = 0
