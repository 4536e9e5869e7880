"""The Action Executor's side of talking to one project (``agents.executor`` decides
*when*; this module says *how*): the call itself, classifying its answer, what ``/health``
and ``/status`` say after an unknown outcome, and the verification loop.

Every call has an explicit timeout; nothing here raises for anything a project does
(except ``CancelledError``).  Text that came from a project is redacted before it is
returned, because it goes to the store, to Slack and later to Claude.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from agents.clock import Clock
from agents.command_adapter import run_command
from agents.control import send_control
from agents.probe_result import Level, ProbeResult
from agents.redact import redact
from bot.config import Project
from storage.operations_store import ActionRequest

REFUSED_CODES: Final = frozenset({400, 401, 403, 404, 409, 422})
STATUS_MAX_BYTES: Final = 64 * 1024
DEFAULT_PROBE_TIMEOUT_S: Final = 5.0

ProbeFn = Callable[[Project], Awaitable[ProbeResult]]
SessionRef = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession | None]


@dataclass(frozen=True, slots=True)
class CallResult:
    outcome: str  # accepted | refused | unknown
    detail: str  # what the project (or the command) said, redacted
    output: str = ""  # a command's redacted output tail


@dataclass(frozen=True, slots=True)
class Check:
    """What /health and /status said right after an unknown outcome."""

    probe: ProbeResult
    state: str | None  # /status "state", when it answered one
    error: str  # the whole story, for the action's ``error``
    payload: dict[str, Any]  # for the event


def classify(status: int, answer: dict[str, Any]) -> CallResult:
    """2xx accepted; the client errors that mean "not done" refused; anything else (5xx,
    a redirect, 429 ...) unknown: the action may or may not have happened."""
    if 200 <= status < 300:
        return CallResult("accepted", f"/control accepted (HTTP {status})")
    why = answer.get("error")
    said = f": {str(why)[:300]}" if why else ""
    if status in REFUSED_CODES:
        return CallResult("refused", redact(f"/control refused: HTTP {status}{said}"))
    return CallResult("unknown", redact(f"/control answered HTTP {status}{said}"))


def probe_timeout(project: Project) -> float:
    return project.timeout or DEFAULT_PROBE_TIMEOUT_S


class ProjectCalls:
    def __init__(
        self,
        session: SessionRef,
        probe: ProbeFn,
        secret_for: Callable[[Project], bytes | None],
        clock: Clock,
        command_env: Mapping[str, str] | None = None,
    ) -> None:
        # Commands get only this environment (never orch's own: it holds the Slack token,
        # the database password, every project's /control secret).
        self._command_env = dict(command_env or {})
        self._session = session
        self._probe = probe
        self._secret_for = secret_for
        self._clock = clock

    def secret(self, project: Project) -> bytes | None:
        return self._secret_for(project)

    async def call(self, project: Project, action: ActionRequest) -> CallResult:
        """The action, once: ``/control`` signed with the action id as idempotency key,
        or the configured command for a project that does not speak the contract."""
        timeout = project.policy.control_timeout
        if project.kind != "contract":
            argv = project.control_commands.get(action.action)  # type: ignore[call-overload]
            if not argv:  # checked before the claim; the config may have changed since
                return CallResult("refused", f"no command is configured for {action.action}")
            result = await run_command(argv, timeout, env=self._command_env)
            return CallResult(result.outcome, result.error or f"{argv[0]} exited 0", result.output)
        secret = self._secret_for(project)
        if not secret:  # checked before the claim; the environment may have changed since
            return CallResult("refused", f"no /control secret for {project.name}")
        try:
            async with asyncio.timeout(timeout + 1.0):  # belt and braces over aiohttp's own
                status, answer = await send_control(
                    self._http(), project.control_base, secret, action.action,
                    idempotency_key=action.id, timeout=timeout,
                    now=self._clock.now().timestamp(),
                )  # fmt: skip
        except TimeoutError:
            return CallResult("unknown", f"/control did not answer within {timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return CallResult("unknown", redact(f"/control failed: {type(exc).__name__}: {exc}"))
        return classify(status, answer)

    async def check(self, project: Project, what: str) -> Check:
        """After an unknown outcome, before anything else: read /health and /status."""
        result = await self._probe(project)
        state, status_note = await self.status(project)
        health = result.level.value + (f" ({result.reason})" if result.reason else "")
        error = redact(
            f"outcome unknown: {what}; not sent again; /health: {health}; /status: {status_note}"
        )
        payload = {"health": result.level.value, "health_reason": redact(result.reason),
                   "status": state}  # fmt: skip
        return Check(result, state, error, payload)

    async def status(self, project: Project) -> tuple[str | None, str]:
        """(state, what to tell people) from a plain GET of the project's /status."""
        if project.kind != "contract":
            return None, f"none (kind {project.kind})"
        timeout = probe_timeout(project)
        try:
            async with (
                asyncio.timeout(timeout),
                self._http().get(
                    f"{project.url}/status", allow_redirects=False,
                    headers={"Accept": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response,
            ):  # fmt: skip
                if response.status != 200:
                    return None, f"HTTP {response.status}"
                doc = json.loads(await response.content.read(STATUS_MAX_BYTES))
        except TimeoutError:
            return None, f"no answer within {timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, redact(f"{type(exc).__name__}: {exc}")[:200]
        state = doc.get("state") if isinstance(doc, dict) else None
        if not isinstance(state, str):
            return None, "no state in the answer"
        return state[:40], state[:40]

    async def verify(
        self, project: Project, action: ActionRequest, first: ProbeResult | None = None
    ) -> tuple[bool, str]:
        """Probe every ``verify_interval`` (starting now, or with ``first``) until the
        project has recovered from the action's point of view, or ``verify_timeout``
        passes: (recovered, why not)."""
        policy = project.policy
        deadline = self._clock.monotonic() + policy.verify_timeout
        result = first
        while True:
            if result is None:
                result = await self._probe(project)
            healthy, why = await self._recovered(project, action, result)
            remaining = deadline - self._clock.monotonic()
            if healthy or remaining <= 0:
                return healthy, redact(why)
            await self._clock.sleep(min(policy.verify_interval, remaining))
            result = None

    async def _recovered(
        self, project: Project, action: ActionRequest, result: ProbeResult
    ) -> tuple[bool, str]:
        """pause: /status says paused; resume: running and healthy; restart, clear_cache:
        /health passes."""
        if action.action in ("pause", "resume"):
            state = result.state
            if state is None and project.kind == "contract":
                state, _ = await self.status(project)
            if action.action == "pause":
                if project.kind != "contract":  # nothing to observe: the command's word
                    return action.outcome == "accepted", "a pause cannot be observed"
                return state == "paused", f"/status state is {state or 'unknown'}, not paused"
            if project.kind == "contract" and state != "running":
                return False, f"/status state is {state or 'unknown'}, not running"
        if result.level is Level.PASS:
            return True, ""
        return False, result.reason or f"/health is {result.level.value}"

    def _http(self) -> aiohttp.ClientSession:
        session = self._session
        found = session if isinstance(session, aiohttp.ClientSession) else session()
        if found is None:
            raise RuntimeError("the executor has no HTTP session (not started?)")
        return found
