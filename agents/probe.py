"""The probe client: one call, one ``ProbeResult``, for each kind of project (DESIGN §3).

``ProbeClient.probe`` never raises (except ``CancelledError``): a service that refuses,
hangs, drips, redirects or answers garbage is a FAIL with a reason naming the request and
the problem, because the monitor loop must keep going whatever a project does.

Levels:
- ``contract``: /health decides pass/warn/fail. /metrics and /status come with it,
  pipelined on one connection (same deadline; an origin where a pipeline went unanswered
  is asked concurrently instead, see ``probe_fetch.fetch_all``); when they are broken
  the project is not down, so the level is capped at WARN with their reasons, and
  whatever parsed is kept.  The monitor's ``poll`` fetches them only once per
  ``scrape_interval``.
- ``http``: PASS when the status code, ``body_contains`` and ``json_path`` all hold.
- ``prometheus``: PASS when the page is HTTP 200 and parses (see agents.probe_prometheus).

Hot path (~1000 probes/s): requests through the caller's lean keep-alive client
(agents.lean_http; URLs with user info through the aiohttp session), URLs parsed and
request lines built once (cached), no logging, no regexes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import datetime
from functools import lru_cache
from typing import Any

import aiohttp

from agents import probe_parse as parse
from agents.clock import Clock
from agents.lean_http import LeanHttp
from agents.probe_fetch import MAX_BODY, Answer, ProbeError, Target, fetch, fetch_all, target
from agents.probe_parse import BadAnswer
from agents.probe_prometheus import prometheus_metrics
from agents.probe_result import Level, ProbeResult
from bot.config import HttpCheck, Project

__all__ = ["MAX_BODY", "ProbeClient"]

DEFAULT_TIMEOUT = 5.0  # only for a Project built without Config (no defaults filled)
_HEALTH_HEADERS = {"Accept": "application/health+json, application/json;q=0.9"}
_JSON_HEADERS = {"Accept": "application/json"}  # /metrics answers Prometheus text otherwise
_PROM_HEADERS = {"Accept": "text/plain"}
_DEFAULT_CHECK = HttpCheck()
_PROBE_NAMES = {"contract": "health", "http": "http", "prometheus": "prometheus"}


class ProbeClient:
    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, lean: LeanHttp | None = None
    ) -> None:
        # Both owned by the caller: ``lean`` (when given) fetches http and https
        # targets, ``session`` the rest (URLs with user info; everything without lean).
        self._session = session
        self._lean = lean
        self._clock = clock
        # For ``poll``: when each contract project's /metrics and /status were last
        # fetched, and what was wrong with them then (absent: nothing).
        self._scraped_at: dict[str, float] = {}
        self._side_problems: dict[str, str] = {}

    def poll(self, project: Project) -> Coroutine[Any, Any, ProbeResult]:
        """The scheduled probe: /health every time, /metrics and /status only once per
        ``scrape_interval`` (the first probe, then the first one at least that long after
        the last fetch; half an interval early counts, so a 30 s cadence on a 10 s
        schedule is every third probe, not every fourth).  Between fetches a problem the
        last fetch found keeps the level at WARN, so a broken /metrics reads the same on
        every probe instead of flipping the project between healthy and degraded."""
        if project.kind != "contract":
            return self.probe(project)
        now = self._clock.monotonic()
        last = self._scraped_at.get(project.name)
        every = project.scrape_interval or 0.0
        early = (project.interval or 0.0) / 2
        scrape = last is None or now - last >= every - early
        if scrape:
            self._scraped_at[project.name] = now
        return self.probe(project, scrape=scrape)  # (a plain function: one frame less)

    async def probe(self, project: Project, *, scrape: bool = True) -> ProbeResult:
        """Probe ``project`` once, within ``project.timeout`` for everything.

        ``scrape=False`` skips the metric work for schedulers that scrape less often
        than they check: a contract probe fetches only /health, a prometheus probe only
        checks that the page answers 200 without parsing it.
        """
        ts = self._clock.now()
        started = time.perf_counter()
        timeout = project.timeout if project.timeout is not None else DEFAULT_TIMEOUT
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            if project.kind == "contract":
                return await self._contract(project, ts, deadline, timeout, scrape)
            if project.kind == "http":
                return await self._http(project, ts, deadline, timeout)
            return await self._prometheus(project, ts, deadline, timeout, scrape)
        except ProbeError as exc:
            return ProbeResult(
                project.name, ts, Level.FAIL, exc.latency_ms, exc.reason,
                probe=_PROBE_NAMES.get(project.kind, "health"),
            )  # fmt: skip
        except Exception as exc:  # a bug here must cost one FAIL, not the monitor loop
            return ProbeResult(
                project.name, ts, Level.FAIL, (time.perf_counter() - started) * 1000.0,
                f"probe error: {type(exc).__name__}: {exc}",
                probe=_PROBE_NAMES.get(project.kind, "health"),
            )  # fmt: skip

    # -- contract ---------------------------------------------------------------------

    async def _contract(
        self, project: Project, ts: datetime, deadline: float, timeout: float, scrape: bool
    ) -> ProbeResult:
        health_t, metrics_t, status_t = _contract_targets(project.url)
        session, lean = self._session, self._lean
        if not scrape:
            # A ProbeError here becomes the FAIL in probe().
            alone = await fetch(session, health_t, _HEALTH_HEADERS, deadline, timeout, lean)
            return self._health_only(project, ts, alone)
        wanted = (
            (health_t, _HEALTH_HEADERS),
            (metrics_t, _JSON_HEADERS),
            (status_t, _JSON_HEADERS),
        )
        health, metrics_a, status_a = await fetch_all(session, wanted, deadline, timeout, lean)
        side: tuple[Answer | ProbeError | None, ...] = (metrics_a, status_a)
        if _unanswered(metrics_a) or _unanswered(status_a):
            # Queued behind another request when the deadline passed (one that hung, or
            # a server that ignores pipelined requests): not judged now.  From now on the
            # three go concurrently, and the next probe scrapes again.
            self._scraped_at.pop(project.name, None)
            side = tuple(None if _unanswered(a) else a for a in side)
        metrics: dict[str, float] = {}
        metrics_doc, metrics_problem = _side_doc(side[0], metrics_t)
        if metrics_doc is not None:
            metrics, problems = parse.contract_metrics(metrics_doc)
            if problems:
                metrics_problem = parse.join_problems(metrics_t.label, problems)
        state = status_version = None
        status_doc, status_problem = _side_doc(side[1], status_t)
        if status_doc is not None:
            state, status_version, problems = parse.contract_status(status_doc)
            if problems:
                status_problem = parse.join_problems(status_t.label, problems)
        extra = [r for r in (metrics_problem, status_problem) if r]
        if extra:
            self._side_problems[project.name] = "; ".join(extra)
        else:
            self._side_problems.pop(project.name, None)
        if isinstance(health, ProbeError):
            return ProbeResult(
                project.name, ts, Level.FAIL, health.latency_ms, health.reason,
                metrics=metrics, state=state, version=status_version,
            )  # fmt: skip
        assert isinstance(health, Answer)
        level, reason, health_version = _health_verdict(health)
        if level is not Level.FAIL and extra:
            # Broken side endpoints are worth a warning, never an outage.
            level = Level.WARN
            reason = "; ".join([reason, *extra] if reason else extra)
        return ProbeResult(
            project.name, ts, level, health.latency_ms, reason, health.status,
            metrics=metrics, state=state, version=status_version or health_version,
        )  # fmt: skip

    def _health_only(self, project: Project, ts: datetime, alone: Answer) -> ProbeResult:
        """The verdict of /health alone; a problem the last scrape found keeps it at WARN."""
        level, reason, version = _health_verdict(alone)
        known = self._side_problems.get(project.name)
        if known and level is not Level.FAIL:
            level = Level.WARN
            reason = f"{reason}; {known}" if reason else known
        return ProbeResult(
            project.name, ts, level, alone.latency_ms, reason, alone.status, version=version
        )

    # -- http -------------------------------------------------------------------------

    async def _http(
        self, project: Project, ts: datetime, deadline: float, timeout: float
    ) -> ProbeResult:
        check = project.http or _DEFAULT_CHECK
        answer = await fetch(
            self._session, target(project.url), None, deadline, timeout, self._lean
        )
        try:
            _http_check(answer, check)
        except BadAnswer as exc:
            return _fail(project, ts, answer, f"{answer.label}: {exc}", "http")
        return ProbeResult(
            project.name, ts, Level.PASS, answer.latency_ms, "", answer.status, probe="http"
        )

    # -- prometheus -------------------------------------------------------------------

    async def _prometheus(
        self, project: Project, ts: datetime, deadline: float, timeout: float, scrape: bool
    ) -> ProbeResult:
        answer = await fetch(
            self._session, target(project.url), _PROM_HEADERS, deadline, timeout, self._lean
        )
        try:
            if answer.status != 200:
                raise BadAnswer(parse.redirect_or_status(answer))
            metrics = prometheus_metrics(parse.decode(answer.body)) if scrape else {}
        except BadAnswer as exc:
            return _fail(project, ts, answer, f"{answer.label}: {exc}", "prometheus")
        return ProbeResult(
            project.name, ts, Level.PASS, answer.latency_ms, "", answer.status,
            probe="prometheus", metrics=metrics,
        )  # fmt: skip


@lru_cache(maxsize=1 << 16)  # a fleet of 5,000 must fit: a miss parses three URLs
def _contract_targets(base: str) -> tuple[Target, Target, Target]:
    return target(base + "/health"), target(base + "/metrics"), target(base + "/status")


def _health_verdict(answer: Answer) -> tuple[Level, str, str | None]:
    """(level, reason, version) from the /health answer."""
    code = answer.status
    if code not in (200, 503):
        return Level.FAIL, f"{answer.label}: {parse.redirect_or_status(answer)}", None
    judge = _health_document if len(answer.body) <= _REMEMBERED_BODY else _judge_health
    level, detail, version = judge(code, answer.content_type, answer.body)
    return level, f"{answer.label}: {detail}" if detail else "", version


_REMEMBERED_BODY = 512  # bytes: a health document this small is judged once per content


def _judge_health(code: int, content_type: str, body: bytes) -> tuple[Level, str, str | None]:
    """(level, what is wrong or "", version) of a 200 or 503 /health answer."""
    answer = Answer("", code, content_type, None, None, body, 0.0)
    try:
        parse.expect_json_type(answer, parse.HEALTH_TYPES, "application/health+json")
        doc = parse.load_object(body)
        level, detail = parse.health_status(doc)
    except BadAnswer as exc:
        # A 503 that is not health+json is usually a proxy's error page: say both.
        prefix = "" if code == 200 else f"HTTP {code}, "
        return Level.FAIL, f"{prefix}{exc}", None
    version = doc.get("version")
    version = version if isinstance(version, str) else None
    expected = 503 if level is Level.FAIL else 200
    if code != expected:
        return Level.FAIL, f'HTTP {code} with status "{level}" (expected {expected})', version
    return level, detail, version


# Most services answer /health with the same few bytes probe after probe: parsing and
# judging them once per distinct answer saves a JSON decode on nearly every probe.
_health_document = lru_cache(maxsize=4096)(_judge_health)


def _unanswered(answer: Answer | ProbeError | None) -> bool:
    return isinstance(answer, ProbeError) and answer.retry


def _side_doc(
    answer: Answer | BaseException | None, where: Target
) -> tuple[dict[str, Any] | None, str]:
    """The JSON object of a /metrics or /status answer, or (None, the problem); (None, "")
    for one that was never asked (None)."""
    if answer is None:
        return None, ""
    if not isinstance(answer, Answer):
        return None, answer.reason if isinstance(answer, ProbeError) else f"{where.label}: {answer}"
    try:
        if answer.status != 200:
            raise BadAnswer(parse.redirect_or_status(answer))
        parse.expect_json_type(answer, None, "application/json")
        return parse.load_object(answer.body), ""
    except BadAnswer as exc:
        return None, f"{where.label}: {exc}"


def _http_check(answer: Answer, check: HttpCheck) -> None:
    if answer.status not in check.expect_status:
        codes = check.expect_status
        wanted = str(codes[0]) if len(codes) == 1 else "one of " + ", ".join(map(str, codes))
        raise BadAnswer(f"{parse.redirect_or_status(answer)}, expected {wanted}")
    if check.body_contains is not None:
        text = parse.decode(answer.body, answer.charset or "utf-8")
        if check.body_contains not in text:
            raise BadAnswer(
                f'body does not contain "{parse.clip(check.body_contains, 60)}" '
                f"({parse.snippet(answer.body)})"
            )
    if check.json_path is not None:
        value = parse.json_path_get(parse.load_json(answer.body), check.json_path)
        if not parse.same_json(value, check.json_equals):
            raise BadAnswer(
                f'json_path "{check.json_path}" is {parse.show(value)}, '
                f"expected {parse.show(check.json_equals)}"
            )


def _fail(project: Project, ts: datetime, answer: Answer, reason: str, probe: str) -> ProbeResult:
    return ProbeResult(
        project.name, ts, Level.FAIL, answer.latency_ms, reason, answer.status, probe=probe
    )
