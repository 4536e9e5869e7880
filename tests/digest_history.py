"""A synthetic day of four projects with answers worked out by hand, for the report store
and the digest (tests/test_digest_store.py, tests/test_digest.py), on every backend.

Actions, approvals, analyses and silences are stamped with *database* time (PostgreSQL's
``now()``; the SQLite store's clock, the system's in these tests), which a test cannot
choose.  So the day is laid out around it: the window ends ``END`` = the start of the
hour after next, and whatever the store stamps "now" falls one to two hours before that,
inside the window, with every hand-placed instant well clear of it.

- **alpha**: a probe every 10 s for 24 h, 60 of them failing in [END-10h, END-10h+10m):
  uptime exactly 100 × 85,800 / 86,400 %.  Incidents: I1 down [END-10h, +10m), acked
  after 2 min; I2 metric:error_rate [END-5h, END-4h), answered by an automatic fix (its
  first action, at db now); I3 down [END-30h, END-23h), opened before the window (1 h of
  downtime inside it; its whole 7 h count for MTTR); I4 down since END-2h, still open.
  So: 3 incidents, 1 open, downtime 600 + 3,600 + 7,200 = 11,400 s, MTTR (600 + 25,200)/2
  = 12,900 s, MTTA (120 + the fix's delay)/2.  Automatic fixes: 2 run (1 verified, 1
  failed), 1 asked but never run; a person's verified restart does not count.  Approvals:
  1 granted, 1 denied, 1 expired.  Analyses: 2 by Claude (2,000 tokens, $0.03), 1 by the
  rules.  Anomalies: error_rate crit and warn, latency warn (and one from yesterday);
  one flapping episode.  Announced down.
- **beta**: passing probes, except those entirely inside a 5-minute silence (from db now),
  where a down incident also opened and resolved and an anomaly fired: uptime 100 %,
  nothing counted, 300 s of maintenance.  Announced healthy.
- **gamma**: nothing at all: not observed.
- **delta**: passing probes only: all clear.  Announced healthy.
- **other** (not asked about): an incident, which no answer may include.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agents.events import (
    ACTION_REQUESTED,
    ACTION_STARTED,
    ANALYSIS_COMPLETED,
    APPROVAL_REQUESTED,
    INCIDENT_OPENED,
    METRIC_ANOMALY,
    PROJECT_FLAPPING,
    PROJECT_STATUS_CHANGED,
    SILENCE_CREATED,
    Event,
)
from storage.autonomy_store import Approval
from storage.base import Incident, ProbeRecord, Store
from storage.budget_store import Analysis, NewAnalysis
from storage.execution_store import FAILED, RUNNING, VERIFIED, VERIFYING
from storage.operations_store import ActionRequest, Silence
from storage.rollups import floor_hour

PROJECTS = ["alpha", "beta", "gamma", "delta"]
H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)


@dataclass(frozen=True)
class History:
    end: datetime
    fix_at: datetime  # the automatic fix answering I2
    silence: Silence

    @property
    def since(self) -> datetime:
        return self.end - 24 * H

    @property
    def alpha_uptime(self) -> float:
        return 100.0 * 85_800 / 86_400

    @property
    def alpha_mtta(self) -> float:
        return (120.0 + (self.fix_at - (self.end - 5 * H)).total_seconds()) / 2


def _event(type_: str, ts: datetime, project: str | None, **payload: Any) -> Event:
    return Event(type_, ts, "test", payload, project)


def _incident(row: Incident) -> Event:
    return _event(INCIDENT_OPENED, row.opened_at, row.project, fingerprint=row.fingerprint)


def _action(row: ActionRequest) -> Event:
    return _event(ACTION_REQUESTED, row.created_at, row.project, action_id=row.id)


def _started(row: ActionRequest) -> Event:
    return _event(ACTION_STARTED, row.started_at or row.created_at, row.project, action_id=row.id)


def _approval(row: Approval) -> Event:
    return _event(APPROVAL_REQUESTED, row.created_at, row.project, approval_id=row.id)


def _analysis(row: Analysis) -> Event:
    return _event(ANALYSIS_COMPLETED, row.created_at, row.new.project, engine=row.new.engine)


def _silence(row: Silence) -> Event:
    return _event(SILENCE_CREATED, row.starts_at, row.project, silence_id=row.id)


def steady(
    project: str, since: datetime, until: datetime, failing: Any = None
) -> list[ProbeRecord]:
    """A probe every 10 s in [since, until); ``failing(ts)`` says which fail."""
    out, ts = [], since
    while ts < until:
        out.append(ProbeRecord(project, ts, "fail" if failing and failing(ts) else "pass", 9.0))
        ts += 10 * S
    return out


async def incident(store: Store, project: str, condition: str, opened: datetime,
                   resolved: datetime | None = None) -> Incident:  # fmt: skip
    fingerprint = f"{project}:{condition}"
    row = Incident(f"{project}-{condition}-{opened.timestamp():.0f}".replace(":", "-"),
                   fingerprint, project, condition, "critical", "synthetic", opened)  # fmt: skip
    stored = await store.open_incident(row, _incident)
    assert stored is not None
    if resolved is not None:
        await store.resolve_incident(fingerprint, resolved, _incident)
    return stored


async def fix(store: Store, project: str, end_state: str | None, *, origin: str = "autofix",
              incident_id: str | None = None) -> ActionRequest:  # fmt: skip
    """An action asked and, unless ``end_state`` is None, run to that state."""
    row = await store.request_action(project, "restart", "auto-fixer", "synthetic", False,
                                     _action, incident_id=incident_id, origin=origin)  # fmt: skip
    if end_state is not None:
        assert await store.start_action(row.id, "replica-a", _started) is not None
        if end_state == VERIFIED:
            await store.move_action(row.id, [RUNNING], VERIFYING, _started)
        moved = await store.move_action(row.id, [RUNNING, VERIFYING], end_state, _started)
        assert moved is not None
    return row


async def approvals(store: Store, project: str) -> None:
    for decision in ("granted", "denied", "expired"):
        row = await store.request_action(project, "pause", "U0ASKER", "synthetic", True, _action)
        ttl = -1.0 if decision == "expired" else 1800.0
        asked = await store.create_approval(row.id, project, "pause", "U0ASKER", "", ttl,
                                            _approval)  # fmt: skip
        if decision != "expired":
            result = await store.decide_approval(asked.id, decision, "U0BOSS",  # type: ignore[arg-type]
                                                 four_eyes=False, event_for=_approval)  # fmt: skip
            assert result.won
    assert len(await store.expire_approvals(_approval)) == 1


async def seed(store: Store) -> History:
    end = floor_hour(await store.db_now()) + 2 * H
    since = end - 24 * H
    lo = end - 10 * H
    await store.add_probes(steady("alpha", since, end, lambda ts: lo <= ts < lo + 10 * M))
    await store.add_probes(steady("delta", since, end))
    i1 = await incident(store, "alpha", "down", lo)
    acked = await store.ack_incident(i1.id, "U0ONCALL", lo + 2 * M, _incident)
    assert acked is not None
    await store.resolve_incident(i1.fingerprint, lo + 10 * M, _incident)
    i2 = await incident(store, "alpha", "metric:error_rate", end - 5 * H, end - 4 * H)
    await incident(store, "alpha", "down", end - 30 * H, end - 23 * H)
    await incident(store, "alpha", "down", end - 2 * H)
    await incident(store, "other", "down", end - 3 * H)
    answer = await fix(store, "alpha", VERIFIED, incident_id=i2.id)
    await fix(store, "alpha", FAILED)
    await fix(store, "alpha", None)
    await fix(store, "alpha", VERIFIED, origin="user")
    await approvals(store, "alpha")
    for engine, tokens, cost in (("claude", (1000, 200), 0.01), ("claude", (500, 300), 0.02),
                                 ("rules", (0, 0), 0.0)):  # fmt: skip
        new = NewAnalysis(
            i2.id, "alpha", engine, "synthetic", None, 0.5, "low",
            input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost,
        )  # fmt: skip
        await store.record_analysis(new, _analysis)
    await store.append_events([
        _event(METRIC_ANOMALY, end - 25 * H, "alpha", metric="error_rate", level="crit"),
        _event(METRIC_ANOMALY, end - 5 * H, "alpha", metric="error_rate", level="crit"),
        _event(METRIC_ANOMALY, end - 3 * H, "alpha", metric="error_rate", level="warn"),
        _event(METRIC_ANOMALY, end - 3 * H + M, "alpha", metric="latency_p95_ms", level="warn"),
        _event(PROJECT_FLAPPING, end - 6 * H, "alpha", started=True),
        _event(PROJECT_FLAPPING, end - 6 * H + 10 * M, "alpha", started=False),
        _event(PROJECT_STATUS_CHANGED, end - 2 * H, "alpha", to="down"),
        _event(PROJECT_STATUS_CHANGED, since, "beta", to="healthy"),
        _event(PROJECT_STATUS_CHANGED, since, "delta", to="healthy"),
    ])  # fmt: skip
    now = await store.db_now()
    silence = await store.create_silence("beta", now + 5 * M, "deploy", "U0OPS", _silence)
    s0, s1 = silence.starts_at, silence.ends_at
    await store.add_probes(steady("beta", since, end, lambda ts: s0 <= ts and ts + 10 * S <= s1))
    await incident(store, "beta", "down", s0 + 30 * S, s0 + 4 * M)
    await store.append_events([_event(METRIC_ANOMALY, s0 + M, "beta", metric="cpu_percent",
                                      level="crit")])  # fmt: skip
    fix_at = answer.created_at
    return History(end, fix_at, silence)
