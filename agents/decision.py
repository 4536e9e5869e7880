"""The Decision agent: explains an escalated incident, and recommends, never acts.

On ``escalation.raised`` (and when a person asks with ``/orch analyze``) it gathers the
context an on-call engineer would read (``agents.analysis_context``), asks Claude when it
may (a key, the circuit breaker closed, the daily and per-incident token budgets not
spent), and falls back to the rule engine otherwise or when Claude's answer is not a
valid analysis.  The analysis is stored with its ``analysis.completed`` event (the
incident's thread shows it), tokens, latency and cost included.

Code decides what happens with it: a recommended action the project allows becomes an
approval request (origin ``claude`` or ``rules``), which always waits for a human; an
action the project does not allow never passes validation; nothing runs from here.

One analysis per incident, unless a person asks again.  Role ``decision``: one replica
handles each escalation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import aiohttp

from agents.actions import request_action
from agents.analysis_context import AnalysisContext, gather_context
from agents.analysis_schema import AnalysisOutput, sanitized
from agents.bus import EventBus
from agents.events import ANALYSIS_COMPLETED, ESCALATION_RAISED, Event
from agents.incidents import main_incident
from bot.config import Config
from storage.base import Incident, Store
from storage.budget_store import Analysis, NewAnalysis
from storage.execution_store import IN_FLIGHT

log = logging.getLogger(__name__)

ROLE: Final = "decision"
SOURCE: Final = "decision"
ASKED: Final = "analysis_requested"  # an escalation a person raised with /orch analyze
# Escalations not about one project's problem: nothing to analyse.
NOT_ANALYSED: Final = frozenset({"mass_failure", "dead_letter"})


class AdvisorResult(Protocol):
    @property
    def output(self) -> AnalysisOutput | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def cost_usd(self) -> float: ...


class Advisor(Protocol):
    """Claude (``agents.claude_advisor.ClaudeAdvisor``)."""

    @property
    def available(self) -> bool: ...

    async def analyze(self, ctx: AnalysisContext) -> AdvisorResult: ...


RuleEngine = Callable[[AnalysisContext], AnalysisOutput]


@dataclass(frozen=True, slots=True)
class Budgets:
    daily_tokens: int
    incident_tokens: int


class DecisionAgent:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        session: Callable[[], aiohttp.ClientSession | None],
        *,
        advisor: Advisor | None,
        rules: RuleEngine,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._config = config
        self._session = session
        self._advisor = advisor
        self._rules = rules
        self._wake = wake

    def register(self, bus: EventBus) -> None:
        bus.subscribe(ROLE, self._on_escalation, types=[ESCALATION_RAISED])

    async def _on_escalation(self, event: Event) -> None:
        reason = event.payload.get("reason")
        if event.project is None or reason in NOT_ANALYSED:
            return
        context = event.payload.get("context")
        asked_by = context.get("requested_by") if isinstance(context, dict) else None
        await self.analyze(
            event.project,
            event.incident_id,
            requested_by=str(asked_by) if reason == ASKED and asked_by else None,
        )

    async def analyze(
        self, name: str, incident_id: str | None, *, requested_by: str | None = None
    ) -> Analysis | None:
        """Analyse ``name``'s incident (once, unless ``requested_by`` a person asking
        again); None when there was nothing to do."""
        config = self._config()
        try:
            project = config.project(name)
        except KeyError:
            return None
        incident = await self._incident(name, incident_id)
        if incident is None:
            return None  # an analysis lives in an incident's thread
        if incident.caused_by is not None and requested_by is None:
            return None  # folded into a dependency's outage: the root's analysis covers it
        if requested_by is None and await self._store.analyses_for(incident.id):
            return None  # one per incident: a redelivery, or a second escalation
        ctx = await gather_context(
            self._store, project, incident, self._session, await self._store.db_now()
        )
        new = await self._run_engines(ctx, incident, requested_by, self._budgets(config))
        analysis = await self._store.record_analysis(new, self._event_for(incident))
        self._wake()
        await self._recommend(analysis, incident)
        return analysis

    # -- engines -----------------------------------------------------------------------
    async def _run_engines(
        self, ctx: AnalysisContext, incident: Incident, requested_by: str | None,
        budgets: Budgets,
    ) -> NewAnalysis:  # fmt: skip
        why_rules = await self._why_not_claude(incident, budgets)
        spent = (0, 0, 0.0, 0.0)  # tokens in, out, latency, cost of a failed Claude call
        if why_rules is None and self._advisor is not None:
            result = await self._advisor.analyze(ctx)
            spent = (result.input_tokens, result.output_tokens, result.latency_ms,
                     result.cost_usd)  # fmt: skip
            if result.output is not None:
                output = sanitized(result.output, self._config().defaults.analysis_link_hosts)
                return _new(incident, output, requested_by, spent, note=None)
            why_rules = result.error or "analysis unavailable"
            log.warning("Claude's analysis of %s unavailable: %s", incident.id, why_rules)
        output = sanitized(self._rules(ctx), self._config().defaults.analysis_link_hosts)
        return _new(incident, output, requested_by, spent, note=why_rules)

    async def _why_not_claude(self, incident: Incident, budgets: Budgets) -> str | None:
        """Why the rule engine answers instead of Claude; None when Claude may."""
        if self._advisor is None:
            return "no ANTHROPIC_API_KEY"
        if not self._advisor.available:
            return "Claude is unavailable (no key, or its circuit breaker is open)"
        now = await self._store.db_now()
        if await self._store.tokens_used_since(day_of(now)) >= budgets.daily_tokens:
            return f"the daily budget of {budgets.daily_tokens} tokens is spent"
        used = await self._store.tokens_used_since(incident.opened_at, incident_id=incident.id)
        if used >= budgets.incident_tokens:
            return f"this incident's budget of {budgets.incident_tokens} tokens is spent"
        return None

    def _budgets(self, config: Config) -> Budgets:
        d = config.defaults
        return Budgets(d.analysis_daily_tokens, d.analysis_incident_tokens)

    # -- effects -----------------------------------------------------------------------
    async def _recommend(self, analysis: Analysis, incident: Incident) -> None:
        """A recommended action the project allows becomes an approval request; not when
        something is already in flight for the incident (an approval waiting, say)."""
        new = analysis.new
        action = new.recommended_action
        project = self._config().project(incident.project)
        if action is None or action not in project.allowed_actions:
            return
        if any(a.state in IN_FLIGHT for a in await self._store.incident_actions(incident.id)):
            return
        await request_action(
            self._store, incident.project, action, requested_by=new.engine,
            reason=f"{new.engine} recommends {action}: {new.diagnosis}"[:300], origin=new.engine,
            needs_approval=True, incident_id=incident.id, source=SOURCE,
            approval_ttl_s=project.policy.approval_ttl,
        )  # fmt: skip
        self._wake()

    def _event_for(self, incident: Incident) -> Callable[[Analysis], Event]:
        def build(analysis: Analysis) -> Event:
            payload = {"analysis_id": analysis.id, **analysis.new.payload}
            return Event(ANALYSIS_COMPLETED, analysis.created_at, SOURCE, payload,
                         incident.project, incident.id)  # fmt: skip

        return build

    async def _incident(self, name: str, incident_id: str | None) -> Incident | None:
        incidents = await self._store.list_incidents(project=name, limit=200)
        if incident_id is not None:
            return next((i for i in incidents if i.id == incident_id), None)
        return main_incident([i for i in incidents if i.state == "open"])


def _new(
    incident: Incident,
    output: AnalysisOutput,
    requested_by: str | None,
    spent: tuple[int, int, float, float],
    *,
    note: str | None,
) -> NewAnalysis:
    payload = output.to_payload()
    if note is not None:
        payload["claude_unavailable"] = note  # why the rules answered
    action = output.recommended_action if output.actionable else None
    return NewAnalysis(
        incident_id=incident.id, project=incident.project, engine=output.engine,
        diagnosis=output.diagnosis, recommended_action=action, confidence=output.confidence,
        risk=output.risk, payload=payload, input_tokens=spent[0], output_tokens=spent[1],
        latency_ms=spent[2], cost_usd=spent[3], requested_by=requested_by,
    )  # fmt: skip


def day_of(at: datetime) -> datetime:
    """The start of ``at``'s UTC day: the daily token budget's window."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)
