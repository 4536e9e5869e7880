"""A logical database of the shared test Redis that no other test run uses now.

orch's event stream and consumer groups have fixed names, so tests that run orch on the
shared Redis (ORCH_TEST_REDIS_URL) must not share a database with another run: another
test's events would reach their replicas.  A database is claimed with a key that expires
(so a killed run's claim does not hold it for ever), emptied of whatever a killed run left
behind, and emptied again after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

CLAIM = "orch-test:claimed-by"
CLAIM_TTL_S = 600  # longer than any test that holds one


@asynccontextmanager
async def own_redis_database(redis_url: str) -> AsyncIterator[str]:
    """The URL of a claimed, empty logical database (1–15) of ``redis_url``'s server."""
    token = uuid.uuid4().hex
    parts = urlsplit(redis_url)
    for db in range(15, 0, -1):
        url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
        client = aioredis.Redis.from_url(url)
        try:
            if await client.set(CLAIM, token, nx=True, ex=CLAIM_TTL_S):
                await client.flushdb()  # what an earlier, killed run left behind
                await client.set(CLAIM, token, ex=CLAIM_TTL_S)
                try:
                    yield url
                finally:
                    await client.flushdb()
                return
        finally:
            await client.aclose()
    pytest.fail("no free Redis logical database (1-15) for this test")
