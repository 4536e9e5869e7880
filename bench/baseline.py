"""The baselines: a bare polling loop making the same requests as orch, on aiohttp's
client (the reference the scale issue names) or on orch's lean client (``lean=True``:
agents.lean_http, which orch probes with since it is leaner than aiohttp).

Per project and interval it GETs /health, and with every ``scrape_every``-th probe also
/metrics and /status concurrently (as orch's ProbeClient.poll does), with the same
Accept headers, through one keep-alive session configured like orch's (same
connector limit), paced like ``agents.monitor.ProjectMonitor``: one task per project, a
random phase inside the first interval, fixed-rate schedule, a semaphore bounding
concurrent probes, and lateness measured the same way (start of the probe minus the
time it was due). It reads every body and checks the /health verdict, and does nothing
else: no parsing beyond that, no storage, no analysis.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
from yarl import URL

from agents.lean_http import LeanHttp

HEALTH_HEADERS = {"Accept": "application/health+json, application/json;q=0.9"}
JSON_HEADERS = {"Accept": "application/json"}


class BarePoller:
    def __init__(
        self,
        urls: list[str],
        interval: float,
        timeout: float,
        *,
        max_concurrency: int = 256,
        scrape_every: int = 1,
        lean: bool = False,
    ) -> None:
        self._urls = urls
        self._use_lean = lean
        self._lean: LeanHttp | None = None
        self._timeout_s = timeout
        self._scrape_every = scrape_every
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.lateness: list[float] = []
        self.probes_done = 0
        self.probes_ok = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_concurrency,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
            keepalive_timeout=45.0,  # as orch's (bot.runtime.PROBE_KEEPALIVE_S)
        )
        self._session = aiohttp.ClientSession(connector=connector)
        if self._use_lean:  # the same keep-alive; loopback literals need no resolver
            self._lean = LeanHttp(keepalive=45.0)
        rng = random.Random()
        self._tasks = [
            asyncio.create_task(self._poll_forever(url, rng.uniform(0, self._interval)))
            for url in self._urls
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._lean is not None:
            await self._lean.close()
            self._lean = None

    async def _get(self, url: URL, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._lean is not None:
            request, key = _lean_requests(url, headers)
            deadline = asyncio.get_running_loop().time() + self._timeout_s
            head, body = await self._lean.get(key, request, deadline, 1 << 20)
            return head.status, body
        assert self._session is not None
        async with self._session.get(
            url, headers=headers, allow_redirects=False, timeout=self._timeout
        ) as resp:
            return resp.status, await resp.read()

    async def _probe(self, health: URL, metrics: URL, status: URL, scrape: bool) -> bool:
        try:
            if scrape:
                answers = list(
                    await asyncio.gather(
                        self._get(health, HEALTH_HEADERS),
                        self._get(metrics, JSON_HEADERS),
                        self._get(status, JSON_HEADERS),
                    )
                )
            else:
                answers = [await self._get(health, HEALTH_HEADERS)]
        except Exception:  # aiohttp's errors, timeouts, the lean client's errors
            return False
        if any(code != 200 for code, _ in answers):
            return False
        try:
            return bool(json.loads(answers[0][1]).get("status") == "pass")
        except ValueError:
            return False

    async def _poll_forever(self, base: str, phase: float) -> None:
        # URLs parsed once, as orch caches its targets.
        health, metrics, status = (URL(base + path) for path in ("/health", "/metrics", "/status"))
        due = time.monotonic() + phase
        probes = 0
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self._slots:
                self.lateness.append(max(0.0, time.monotonic() - due))
                scrape = probes % self._scrape_every == 0
                ok = await self._probe(health, metrics, status, scrape)
            probes += 1
            self.probes_done += 1
            self.probes_ok += ok
            due += self._interval
            now = time.monotonic()
            if due < now:  # fell behind: skip missed slots, as the monitor does
                due = now


_REQUESTS: dict[tuple[URL, str], tuple[bytes, tuple[str, int, bool]]] = {}


def _lean_requests(url: URL, headers: dict[str, str]) -> tuple[bytes, tuple[str, int, bool]]:
    """The request bytes, built once per URL and Accept, as orch's targets are."""
    accept = headers["Accept"]
    found = _REQUESTS.get((url, accept))
    if found is None:
        text = (
            f"GET {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
            f"Accept: {accept}\r\nUser-Agent: {aiohttp.http.SERVER_SOFTWARE}\r\n\r\n"
        )
        key = (url.raw_host or "", url.port or 80, url.scheme == "https")
        found = _REQUESTS[(url, accept)] = (text.encode(), key)
    return found
