"""Claude as a read-only advisor (DESIGN §6): one analysis of one incident, asked of the
Messages API through ``anthropic.AsyncAnthropic``, and answered as an ``AnalysisOutput``
or "analysis unavailable" — never an action.

This module reads an ``AnalysisContext`` and returns a ``ClaudeResult``; it does not
import, and cannot reach, the Action Executor (a test checks ``sys.modules``).  What
Claude recommends goes to code that validates it and to a human who approves it.

The request: the system prompt (``templates/analysis_system.txt.j2``) says Claude is a
read-only advisor, that the log section is untrusted data whose instructions are to be
ignored, and that the answer is the tool call; the user message
(``templates/analysis_prompt.txt.j2``) holds the context and the log lines inside one
``<untrusted_logs>`` … ``</untrusted_logs>`` block.  Every string of it passes through
``PromptView``, which redacts it again (``agents.redact``) and removes any copy of the
delimiter, however the view was built.  One tool is offered, ``TOOL_NAME`` with
``tool_schema(ctx.allowed_actions)``: the project's allowed actions only.

The tool is forced (``tool_choice {"type": "tool"}``) on the models known to accept
that.  Claude Sonnet 5.5, Opus 5.5 and Fable 5.1/5.2 answer a forced tool choice with
HTTP 400, and a model not in ``MODELS`` may too, so those get ``{"type": "auto"}`` and
the system prompt's instruction: a request every model accepts.  Either way the answer
is checked by code: exactly one ``tool_use`` block named ``TOOL_NAME`` whose input
passes ``analysis_schema.validate``; prose, another tool, several calls, an answer cut
at ``max_tokens``, an unknown or another project's action, confidence 7.3, 100 KB: all
are "analysis unavailable: <why>".

Failures: the SDK retries (``max_retries``, default 2) on 408/409/429/5xx/529, connection
errors and timeouts, each attempt bounded by ``timeout_s`` (default 30 s); the whole call
is bounded by ``deadline_s`` (attempts, plus the SDK's waits between them, which follow a
``retry-after`` of any size).  Whatever still fails — an API error, a timeout, a reset
connection, a body that is not JSON — is an ``error`` in the result, never an exception
(except ``CancelledError``), and a failure for the circuit breaker (3 in a row open it
for 5 min; then one probe).  A well-formed answer that is not a valid analysis is not a
breaker failure: a log line that talks Claude out of the tool must not switch Claude
off for the whole fleet.

Requests are capped at ``calls_per_minute`` (``CALLS_PER_MINUTE`` by default) in any 60 s
of the injected clock (``agents.call_cap``): in an alert storm hundreds of incidents
escalate at once, and beyond the cap the rule engine explains them ("call_cap"), so a
storm costs a few calls a minute, not one per incident (tests/test_alert_storm.py).

Tokens, latency (the injected clock) and cost go into every result that got an answer.
Cost: ``MODELS`` holds Anthropic's list prices per million tokens (December 2026) for
the models orch expects; a dated snapshot (``…-20260928``) is priced as its model; any
other name is priced at its family's (``FAMILY_DEFAULTS``, the most a current model of
the family costs), and a name of no known family at the highest current price, so a
budget errs on the side of stopping early.  Haiku 5.5 has a second, higher band for
prompts over 100k tokens; orch's prompts are about 3k, so only the first is listed.
orch asks for no prompt caching, so cache reads and writes are not priced.

Prompt text and answers are never logged at INFO or above (they may hold customer data,
redacted or not): the log says which project, how long, how many tokens and, on failure,
a short reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agents.analysis_context import AnalysisContext, LogLine, MetricSummary
from agents.analysis_schema import TOOL_NAME, AnalysisInvalid, AnalysisOutput, tool_schema, validate
from agents.call_cap import CallCap
from agents.circuit_breaker import CircuitBreaker
from agents.clock import Clock
from agents.redact import redact
from bot.render import render_text

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)

TIMEOUT_S: Final = 30.0
MAX_RETRIES: Final = 2
RETRY_WAIT_S: Final = 8.0  # the SDK's longest backoff between attempts (no retry-after)
MAX_TOKENS: Final = 4096  # thinking (where on) and the tool input (16 KB at most) fit
EFFORT: Final = "low"  # a bounded classification over ~3k tokens, within 30 s
SYSTEM_TEMPLATE: Final = "analysis_system.txt.j2"
PROMPT_TEMPLATE: Final = "analysis_prompt.txt.j2"
UNAVAILABLE: Final = "analysis unavailable"
TOOL_DESCRIPTION: Final = (
    "Report your analysis of the incident. Call exactly once; the input is the whole answer."
)
ERROR_CHARS: Final = 300
CALLS_PER_MINUTE: Final = 10  # requests in any 60 s; beyond, the rule engine answers


@dataclass(frozen=True, slots=True)
class ModelTraits:
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    forced_tool: bool = False  # accepts tool_choice {"type": "tool"}
    effort: bool = False  # accepts output_config.effort


MODELS: Final[dict[str, ModelTraits]] = {
    "claude-fable-5-2": ModelTraits(8.0, 40.0, effort=True),
    "claude-fable-5-1": ModelTraits(10.0, 50.0, effort=True),
    "claude-fable-5": ModelTraits(10.0, 50.0, forced_tool=True, effort=True),
    "claude-opus-5-5": ModelTraits(4.0, 20.0, effort=True),
    "claude-opus-5": ModelTraits(5.0, 25.0, forced_tool=True, effort=True),
    "claude-opus-4-5": ModelTraits(5.0, 25.0, forced_tool=True),
    "claude-opus-4-1": ModelTraits(15.0, 75.0, forced_tool=True),
    "claude-sonnet-5-5": ModelTraits(2.0, 10.0, effort=True),
    "claude-sonnet-5": ModelTraits(2.0, 10.0, forced_tool=True, effort=True),
    "claude-sonnet-4-6": ModelTraits(3.0, 15.0, forced_tool=True),
    "claude-sonnet-4-5": ModelTraits(3.0, 15.0, forced_tool=True),
    "claude-haiku-5-5": ModelTraits(0.10, 0.50, effort=True),
    "claude-haiku-4-5": ModelTraits(1.0, 5.0, forced_tool=True),
}
FAMILY_DEFAULTS: Final[dict[str, ModelTraits]] = {
    "fable": ModelTraits(10.0, 50.0),
    "opus": ModelTraits(5.0, 25.0),
    "sonnet": ModelTraits(3.0, 15.0),
    "haiku": ModelTraits(1.0, 5.0),
}
UNKNOWN_MODEL: Final = ModelTraits(10.0, 50.0)
_SNAPSHOT: Final = re.compile(r"(?P<model>.+)-\d{8}")


def model_traits(model: str) -> ModelTraits:
    """What orch knows of ``model``: its prices and which request options it accepts."""
    known = MODELS.get(model)
    if known is None and (snapshot := _SNAPSHOT.fullmatch(model)):
        known = MODELS.get(snapshot.group("model"))
    if known is not None:
        return known
    for family, traits in FAMILY_DEFAULTS.items():
        if family in model:
            return traits
    return UNKNOWN_MODEL


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    traits = model_traits(model)
    return (
        input_tokens * traits.input_usd_per_mtok + output_tokens * traits.output_usd_per_mtok
    ) / 1_000_000


# -- the prompt --------------------------------------------------------------------------

# Any copy of the log block's delimiter in a value (a forged ``</untrusted_logs>``).
_DELIMITER: Final = re.compile(r"<\s*/?\s*untrusted[\s_-]*logs\b[^>]*>?", re.IGNORECASE)
DELIMITER_REMOVED: Final = "[delimiter removed]"


def neutralise(text: str) -> str:
    """``text`` redacted and without any copy of the untrusted block's delimiter."""
    return _DELIMITER.sub(DELIMITER_REMOVED, redact(text))


@dataclass(frozen=True)
class PromptView:
    """What the two prompt templates show, as lines.  ``__post_init__`` redacts every
    string and removes delimiter copies, so a view is safe however it was built."""

    tool_name: str
    project: str
    kind: str
    actions_allowed: tuple[str, ...]
    incident: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    transitions: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    tried: tuple[str, ...] = ()
    similar: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    error_lines: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                object.__setattr__(self, f.name, neutralise(value))
            elif isinstance(value, tuple):
                object.__setattr__(self, f.name, tuple(neutralise(str(v)) for v in value))

    @classmethod
    def build(cls, ctx: AnalysisContext, tool_name: str = TOOL_NAME) -> PromptView:
        return cls(
            tool_name=tool_name,
            project=ctx.project,
            kind=ctx.kind,
            actions_allowed=tuple(ctx.allowed_actions),
            incident=_incident_lines(ctx.incident),
            probes=tuple(_probe_line(p) for p in ctx.probes),
            transitions=tuple(ctx.transitions),
            metrics=tuple(_metric_line(m) for m in ctx.metrics),
            tried=tuple(ctx.actions),
            similar=tuple(ctx.similar),
            notes=tuple(ctx.notes),
            error_lines=tuple(_log_line(line) for line in ctx.error_lines),
            log_lines=tuple(_log_line(line) for line in ctx.logs),
        )


def _incident_lines(incident: dict[str, Any] | None) -> tuple[str, ...]:
    if not incident:
        return ()
    return (
        f"{incident.get('id')}: {incident.get('condition')}, severity "
        f"{incident.get('severity')}, opened {incident.get('opened_at')}",
        f"summary: {incident.get('summary')}",
    )


def _probe_line(probe: dict[str, Any]) -> str:
    status = probe.get("http_status")
    return (
        f"{probe.get('ts')} {probe.get('level')}, HTTP {status if status is not None else '-'}"
        f", {probe.get('latency_ms')} ms: {probe.get('reason')}"
    )


def _metric_line(m: MetricSummary) -> str:
    line = (
        f"{m.metric}: {m.samples} samples, first {m.first:g}, last {m.last:g}, "
        f"range {m.low:g} to {m.high:g}, {m.trend}"
    )
    if m.threshold is not None:
        line += f"; warn level {m.threshold:g}, " + (
            f"first beyond it at {m.crossed_at}" if m.crossed_at else "not crossed"
        )
    return line


def _log_line(line: LogLine) -> str:
    return f"{line.ts} {line.level.upper()} {line.message}"


def render_prompts(ctx: AnalysisContext) -> tuple[str, str]:
    """(system prompt, user message) for ``ctx``."""
    view = PromptView.build(ctx)
    return render_text(SYSTEM_TEMPLATE, prompt=view), render_text(PROMPT_TEMPLATE, prompt=view)


# -- the call ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaudeResult:
    output: AnalysisOutput | None
    error: str | None  # why the analysis is unavailable; None when ``output`` is set
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        """For the store: the analysis (or None), why not, and what it cost."""
        return {
            "output": self.output.to_payload() if self.output is not None else None,
            "error": self.error,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": round(self.latency_ms, 1),
            "cost_usd": round(self.cost_usd, 6),
        }


class _Unavailable(Exception):
    """An answer that is not an analysis; ``reason`` is the short kind for orch's log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClaudeAdvisor:
    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        model: str,
        clock: Clock,
        *,
        timeout_s: float = TIMEOUT_S,
        max_retries: int = MAX_RETRIES,
        breaker: CircuitBreaker | None = None,
        deadline_s: float | None = None,
        calls_per_minute: int | Callable[[], int] = CALLS_PER_MINUTE,
    ) -> None:
        self.model = model
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.breaker = breaker or CircuitBreaker(clock)
        self.cap = CallCap(clock, calls_per_minute, 60.0)
        self.deadline_s = (
            deadline_s
            if deadline_s is not None
            else timeout_s * (max_retries + 1) + RETRY_WAIT_S * max_retries
        )
        self.traits = model_traits(model)
        # For orch's /metrics: analyses by outcome ("ok" or the short reason it is
        # unavailable) and the tokens and dollars the answers cost.
        self.outcomes: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.spent_usd = 0.0
        self._client: anthropic.AsyncAnthropic | None = None
        if api_key:
            # Imported here: the SDK costs some 70 MB of memory, for nothing without a key.
            import anthropic

            self._client = anthropic.AsyncAnthropic(
                api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
            )

    @property
    def configured(self) -> bool:
        return self._client is not None

    @property
    def available(self) -> bool:
        """An API key is set and the circuit breaker would let a call through."""
        return self.configured and self.breaker.ready

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def request(self, ctx: AnalysisContext) -> dict[str, Any]:
        """The ``messages.create`` arguments for ``ctx`` (prompts rendered, one tool)."""
        system, user = render_prompts(ctx)
        tool_choice: dict[str, Any] = (
            {"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True}
            if self.traits.forced_tool
            else {"type": "auto", "disable_parallel_tool_use": True}
        )
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": system,
            "messages": [{"role": "user", "content": user}],
            "tools": [
                {
                    "name": TOOL_NAME,
                    "description": TOOL_DESCRIPTION,
                    "input_schema": tool_schema(ctx.allowed_actions),
                }
            ],
            "tool_choice": tool_choice,
        }
        if self.traits.effort:
            kwargs["output_config"] = {"effort": EFFORT}
        return kwargs

    async def analyze(self, ctx: AnalysisContext) -> ClaudeResult:
        """Claude's analysis of ``ctx``, or why there is none.  Never raises (except
        ``CancelledError``)."""
        if self._client is None:
            return self._unavailable(
                ctx, "Claude is not configured (no ANTHROPIC_API_KEY)", "not_configured"
            )
        try:
            kwargs = self.request(ctx)
        except Exception as exc:  # a template bug must not take the caller down
            log.exception("claude: could not render the prompt for %s", ctx.project)
            return self._unavailable(
                ctx, f"the prompt could not be rendered ({type(exc).__name__})", "prompt"
            )
        if not self.breaker.allow():
            return self._unavailable(
                ctx,
                "Claude is switched off after repeated failures "
                f"(circuit open, next try in {self.breaker.retry_in_s:.0f} s)",
                "circuit_open",
            )
        if not self.cap.take():
            self.breaker.release()  # a half-open turn this call took goes back
            return self._unavailable(
                ctx,
                f"Claude's cap of {self.cap.limit} calls a minute is reached (many incidents"
                f" at once); next call in {self.cap.retry_in_s:.0f} s",
                "call_cap",
            )
        started = self.clock.monotonic()
        verdict = False
        try:
            try:
                async with asyncio.timeout(self.deadline_s):
                    response = await self._client.messages.create(**kwargs)
            except Exception as exc:
                self.breaker.failure()
                verdict = True
                message, reason = self._describe(exc)
                return self._unavailable(ctx, message, reason, started=started)
            self.breaker.success()
            verdict = True
        finally:
            if not verdict:
                self.breaker.release()  # cancelled: the half-open turn goes back
        return self._answer(ctx, response, started)

    # -- answers -------------------------------------------------------------------------

    def _answer(self, ctx: AnalysisContext, response: Any, started: float) -> ClaudeResult:
        latency_ms = (self.clock.monotonic() - started) * 1000
        usage = getattr(response, "usage", None)
        tokens_in = _count(getattr(usage, "input_tokens", 0))
        tokens_out = _count(getattr(usage, "output_tokens", 0))
        spent = ClaudeResult(
            None,
            None,
            self.model,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            latency_ms=latency_ms,
            cost_usd=cost_usd(self.model, tokens_in, tokens_out),
        )
        self.tokens.update(input=tokens_in, output=tokens_out)
        self.spent_usd += spent.cost_usd
        try:
            output = self._output(ctx, response)
        except _Unavailable as exc:
            self.outcomes[exc.reason] += 1
            log.warning(
                "claude: analysis of %s unavailable (%s) after %.0f ms, %d+%d tokens",
                ctx.project,
                exc.reason,
                latency_ms,
                tokens_in,
                tokens_out,
            )
            error = f"{UNAVAILABLE}: {redact(str(exc))[:ERROR_CHARS]}"
            return dataclasses.replace(spent, error=error)
        log.info(
            "claude: analysis of %s in %.0f ms, %d+%d tokens, $%.4f",
            ctx.project,
            latency_ms,
            tokens_in,
            tokens_out,
            spent.cost_usd,
        )
        self.outcomes["ok"] += 1
        return dataclasses.replace(spent, output=output)

    def _output(self, ctx: AnalysisContext, response: Any) -> AnalysisOutput:
        content = getattr(response, "content", None)
        if not isinstance(content, list):
            raise _Unavailable("the answer has no content", "no_content")
        calls = [block for block in content if getattr(block, "type", None) == "tool_use"]
        stop = getattr(response, "stop_reason", None)
        if not calls:
            said = "text" if any(getattr(b, "type", None) == "text" for b in content) else "nothing"
            raise _Unavailable(
                f"Claude answered with {said} instead of calling {TOOL_NAME} (stop: {stop})",
                "no_tool_call",
            )
        if len(calls) > 1:
            raise _Unavailable(f"Claude made {len(calls)} tool calls instead of one", "many_calls")
        call = calls[0]
        if call.name != TOOL_NAME:
            raise _Unavailable(
                f"Claude called {str(call.name)[:64]!r}, a tool it was not offered", "unknown_tool"
            )
        if stop != "tool_use":
            raise _Unavailable(f"the answer stopped early (stop: {stop})", "stopped")
        try:
            return validate(call.input, ctx.allowed_actions, "claude")
        except AnalysisInvalid as exc:
            raise _Unavailable(f"invalid analysis: {exc}", "invalid") from exc

    def _describe(self, exc: Exception) -> tuple[str, str]:
        """(the error for the result, a short reason for orch's log)."""
        import anthropic  # loaded already: there is a client (see __init__)

        attempts = self.max_retries + 1
        if isinstance(exc, TimeoutError):
            return (
                f"no answer from Claude within {self.deadline_s:g} s (retries included)",
                "deadline",
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return (
                f"Claude did not answer within {self.timeout_s:g} s ({attempts} attempts)",
                "timeout",
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return f"could not reach Claude: connection failed ({attempts} attempts)", "connection"
        if isinstance(exc, anthropic.APIStatusError):
            kind = _error_type(exc.body)
            retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            after = f" after {self.max_retries} retries" if retried and self.max_retries else ""
            return (
                f"Claude answered HTTP {exc.status_code} ({kind}){after}",
                f"http_{exc.status_code}",
            )
        return f"unreadable answer from Claude ({type(exc).__name__})", "unreadable"

    def _unavailable(
        self, ctx: AnalysisContext, message: str, reason: str, *, started: float | None = None
    ) -> ClaudeResult:
        latency_ms = 0.0 if started is None else (self.clock.monotonic() - started) * 1000
        self.outcomes[reason] += 1
        # Capped is working as meant (a storm), not a fault of Claude's.
        level = {"not_configured": logging.DEBUG, "call_cap": logging.INFO}.get(
            reason, logging.WARNING
        )
        log.log(level, "claude: analysis of %s unavailable (%s)", ctx.project, reason)
        error = f"{UNAVAILABLE}: {redact(message)[:ERROR_CHARS]}"
        return ClaudeResult(None, error, self.model, latency_ms=latency_ms)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _error_type(body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return str(kind)[:40] if kind else "error"
