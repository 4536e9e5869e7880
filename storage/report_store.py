"""Reports over a window, in the store: what the daily digest and ``/orch history`` count
(DESIGN §1: "posts a daily health digest"), and the digest's once-a-day row.

``report_facts`` reads, in one snapshot, everything the digest needs beside uptime (which
is ``Store.uptime``'s, from the roll-ups) for a set of projects over ``[since, until)``:

- the incidents that overlap the window, each with its acknowledgement and its first
  action (``min(actions.created_at)`` of the incident's actions), for downtime, MTTA and
  MTTR;
- the silences (orch's maintenance windows) that overlap it, each ending at the earlier
  of ``ends_at`` and ``ended_at`` (from the earliest opening of those incidents on, if
  earlier than ``since``: whether an incident opened in maintenance decides if it counts);
- the ``metric.anomaly`` and ``project.flapping`` events in it (at most ``signal_limit``,
  the newest), for the top anomalies and flapping;
- per project, counted in SQL: automatic fixes run (origin ``autofix``, created in the
  window, started) and verified; approvals granted / denied / expired (decided in the
  window; an expiry is dated at its deadline); analyses, and Claude's tokens and cost.

What the numbers *mean* (silences excluded, MTTA/MTTR) is ``bot.digest``'s business and is
documented in docs/operations.md ("Digest: the maths"); the store only counts.

``digest_runs`` (``migrations/*/0011_digest.sql``) holds one row per (group, local day):
``claim_digest`` inserts it (or takes over a claim left ``claimed`` for longer than
``stale_s``: the replica that took it died before queueing), ``finish_digest`` marks it
``queued`` once the digest's Slack messages are in the outbox.  Of replicas racing for a
(group, day) exactly one gets True; a queued row is never claimed again.  Times are
database time (PostgreSQL ``now()``; the SQLite store's injected clock).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from storage.rows import TimeCodec

from agents.events import METRIC_ANOMALY, PROJECT_FLAPPING

SIGNAL_TYPES: Final = (METRIC_ANOMALY, PROJECT_FLAPPING)
SIGNAL_LIMIT: Final = 5000
# A claim that was not queued within this long is taken over (its replica died).
DIGEST_STALE_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class ReportIncident:
    id: str
    project: str
    condition: str  # down | metric:<name>
    severity: str
    opened_at: datetime
    resolved_at: datetime | None  # None: still open
    acked_at: datetime | None
    first_action_at: datetime | None  # the earliest action asked about this incident


@dataclass(frozen=True, slots=True)
class SilenceSpan:
    project: str
    starts_at: datetime
    ends_at: datetime  # the earlier of when it runs out and when it was ended


@dataclass(frozen=True, slots=True)
class ReportSignal:
    project: str
    type: str  # metric.anomaly | project.flapping
    ts: datetime
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProjectCounts:
    fixes_run: int = 0  # automatic fixes that started
    fixes_verified: int = 0
    approvals_granted: int = 0
    approvals_denied: int = 0
    approvals_expired: int = 0
    analyses: int = 0  # any engine
    claude_analyses: int = 0
    claude_tokens: int = 0  # input + output
    claude_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class ReportFacts:
    since: datetime
    until: datetime
    incidents: tuple[ReportIncident, ...]  # oldest opened first
    silences: tuple[SilenceSpan, ...]  # by project, then start
    signals: tuple[ReportSignal, ...]  # oldest first
    counts: dict[str, ProjectCounts] = field(default_factory=dict)  # projects with any
    signals_cut: bool = False  # more signals than the limit: the oldest were left out


def check_window(since: datetime, until: datetime) -> None:
    if since > until:
        raise ValueError(f"since {since.isoformat()} is after until {until.isoformat()}")


def check_claim(group: str, day: str, stale_s: float) -> None:
    if not group or not day:
        raise ValueError("a digest claim needs a group and a day")
    if not (stale_s > 0 and math.isfinite(stale_s)):
        raise ValueError(f"stale_s must be a positive number of seconds, got {stale_s}")


def fold_counts(
    fixes: Sequence[Sequence[Any]],
    approvals: Sequence[Sequence[Any]],
    analyses: Sequence[Sequence[Any]],
) -> dict[str, ProjectCounts]:
    """The three grouped queries' rows -> counts per project (both backends select the
    same columns): fixes ``(project, run, verified)``, approvals ``(project, state, n)``,
    analyses ``(project, engine, n, tokens, cost)``."""
    raw: dict[str, dict[str, Any]] = {}
    for project, run, verified in fixes:
        raw.setdefault(project, {}).update(fixes_run=int(run), fixes_verified=int(verified or 0))
    for project, state, n in approvals:
        raw.setdefault(project, {})[f"approvals_{state}"] = int(n)
    for project, engine, n, tokens, cost in analyses:
        entry = raw.setdefault(project, {})
        entry["analyses"] = entry.get("analyses", 0) + int(n)
        if engine == "claude":
            entry.update(claude_analyses=int(n), claude_tokens=int(tokens or 0),
                         claude_cost_usd=float(cost or 0.0))  # fmt: skip
    return {project: ProjectCounts(**values) for project, values in raw.items()}


def facts_from_rows(
    since: datetime,
    until: datetime,
    rows: Sequence[Sequence[Sequence[Any]]],
    signal_limit: int,
    t: TimeCodec,
) -> ReportFacts:
    """ReportFacts from the six queries' rows (incidents, silences, signals newest first
    with one more than ``signal_limit`` to tell a cut, fixes, approvals, analyses), which
    both backends select alike; ``t`` decodes their instants."""
    incidents, silences, signals, fixes, approvals, analyses = rows
    return ReportFacts(
        since, until,
        tuple(ReportIncident(r[0], r[1], r[2], r[3], t.decode(r[4]), t.decode_opt(r[5]),
                             t.decode_opt(r[6]), t.decode_opt(r[7])) for r in incidents),
        tuple(SilenceSpan(r[0], t.decode(r[1]), t.decode(r[2])) for r in silences),
        tuple(signal_from_row(r[0], r[1], t.decode(r[2]), r[3])
              for r in reversed(signals[:signal_limit])),
        fold_counts(fixes, approvals, analyses),
        len(signals) > signal_limit,
    )  # fmt: skip


def signal_from_row(project: str, type_: str, ts: datetime, payload: str) -> ReportSignal:
    # Decoded in Python: payloads are JSON text that may hold NaN (storage.coordination).
    decoded = json.loads(payload)
    return ReportSignal(project, type_, ts, decoded if isinstance(decoded, dict) else {})


class ReportStore(Protocol):
    async def report_facts(
        self,
        projects: Sequence[str],
        since: datetime,
        until: datetime,
        *,
        signal_limit: int = SIGNAL_LIMIT,
    ) -> ReportFacts:
        """Everything above for ``projects`` over ``[since, until)``, from one snapshot.
        Incidents overlap the window (opened before ``until``, unresolved or resolved at or
        after ``since``); their first action is the earliest ever (the caller decides
        whether it falls in the window).  ValueError when ``since > until``."""
        ...

    async def claim_digest(self, group: str, day: str, replica_id: str, stale_s: float) -> bool:
        """Claim the digest of ``group`` for local date ``day`` (``YYYY-MM-DD``): True for
        exactly one caller, unless the claim is left unqueued for ``stale_s`` (then one
        later caller takes it over).  False once it is queued."""
        ...

    async def finish_digest(self, group: str, day: str, replica_id: str) -> bool:
        """Mark the claim of ``replica_id`` queued; False when it holds no such claim (it
        was taken over, or never taken)."""
        ...

    async def digest_state(self, group: str, day: str) -> str | None:
        """``claimed``, ``queued``, or None when nobody claimed it."""
        ...
