"""Store records as the API's JSON objects (their schemas: ``bot.api.schemas``).

Instants are ISO 8601 in UTC with a ``Z``; durations are seconds; a config URL is shown
without credentials, query or fragment (it may carry a token).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agents.events import Event
from bot.api.params import MAX_OFFSET
from bot.config import Config, Project
from storage.activity_store import LastProbe
from storage.autonomy_store import Approval
from storage.base import Incident, MetricHour, ProbeHour
from storage.budget_store import Analysis, Suspension
from storage.operations_store import ActionRequest, IncidentAck, Silence

Json = dict[str, Any]


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def display_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def project(
    p: Project, config: Config, *, status: str, uptime: float | None, open_incidents: int,
    silence: Silence | None, last_probe: LastProbe | None, anomalies: list[Json],
    hourly: tuple[datetime, list[tuple[datetime, float | None]]],
) -> Json:  # fmt: skip
    group = config.orchestrators.get(p.orchestrator or "")
    first_hour, points = hourly
    return {
        "name": p.name, "kind": p.kind, "url": display_url(p.url),
        "group": p.orchestrator if group is not None else None,
        "channel": group.channel if group is not None else None,
        "status": status, "uptime_24h": uptime, "open_incidents": open_incidents,
        "uptime_hourly": {"first_hour": iso(first_hour),
                          "percent": [None if u is None else round(u, 3) for _, u in points]},
        # A failed probe's latency (a timeout, a refused connection) says nothing of speed.
        "latency_ms": last_probe.latency_ms if last_probe and last_probe.level != "fail" else None,
        "last_probe_at": iso(last_probe.ts) if last_probe is not None else None,
        "anomalies": anomalies,
        "silenced_until": iso(silence.ends_at) if silence is not None else None,
        "auto_fix": p.policy.auto_fix,
        "allowed_actions": list(p.allowed_actions), "needs_approval": list(p.needs_approval),
        "depends_on": list(p.depends_on),
        "interval_s": p.interval, "timeout_s": p.timeout,
    }  # fmt: skip


def anomaly(i: Incident) -> Json:
    """An open ``metric:<name>`` incident, as a tile's chip."""
    return {"metric": i.condition.partition(":")[2], "severity": i.severity,
            "summary": i.summary, "since": iso(i.opened_at)}  # fmt: skip


def thresholds(p: Project) -> Json:
    return {
        metric: {"warn": t.warn, "crit": t.crit, "direction": t.direction}
        for metric, t in sorted(p.thresholds.items())
    }


def silence(s: Silence | None) -> Json | None:
    if s is None:
        return None
    return {"id": s.id, "starts_at": iso(s.starts_at), "ends_at": iso(s.ends_at),
            "reason": s.reason, "created_by": s.created_by}  # fmt: skip


def suspension(s: Suspension | None) -> Json | None:
    if s is None:
        return None
    return {"reason": s.reason, "by": s.by, "since": iso(s.since), "until": iso(s.until)}


def incident(i: Incident, ack: IncidentAck | None) -> Json:
    return {
        "id": i.id, "fingerprint": i.fingerprint, "project": i.project,
        "condition": i.condition, "severity": i.severity, "summary": i.summary,
        "state": i.state, "opened_at": iso(i.opened_at), "resolved_at": iso(i.resolved_at),
        "duration_s": i.duration_s, "caused_by": i.caused_by,
        "acked_by": ack.acked_by if ack else None, "acked_at": iso(ack.acked_at) if ack else None,
    }  # fmt: skip


def event(e: Event) -> Json:
    return {"id": e.id, "type": e.type, "ts": iso(e.ts), "source": e.source,
            "project": e.project, "incident_id": e.incident_id, "payload": e.payload}  # fmt: skip


def action(a: ActionRequest) -> Json:
    return {
        "id": a.id, "project": a.project, "action": a.action, "requested_by": a.requested_by,
        "reason": a.reason, "state": a.state, "needs_approval": a.needs_approval,
        "created_at": iso(a.created_at), "incident_id": a.incident_id, "origin": a.origin,
        "outcome": a.outcome, "error": a.error, "executor": a.executor,
        "started_at": iso(a.started_at), "finished_at": iso(a.finished_at),
    }  # fmt: skip


def approval(a: Approval) -> Json:
    return {
        "id": a.id, "action_id": a.action_id, "project": a.project, "action": a.action,
        "requested_by": a.requested_by, "reason": a.reason, "state": a.state,
        "expires_at": iso(a.expires_at), "created_at": iso(a.created_at),
        "decided_by": a.decided_by, "decided_at": iso(a.decided_at),
    }  # fmt: skip


def analysis(a: Analysis) -> Json:
    n = a.new
    return {
        "id": a.id, "created_at": iso(a.created_at), "incident_id": n.incident_id,
        "project": n.project, "engine": n.engine, "diagnosis": n.diagnosis,
        "recommended_action": n.recommended_action, "confidence": n.confidence, "risk": n.risk,
        "payload": n.payload, "input_tokens": n.input_tokens, "output_tokens": n.output_tokens,
        "latency_ms": n.latency_ms, "cost_usd": n.cost_usd, "requested_by": n.requested_by,
    }  # fmt: skip


def probe_hour(h: ProbeHour) -> Json:
    up = 100.0 * h.up_s / h.observed_s if h.observed_s > 0 else None
    return {
        "hour": iso(h.hour), "probes": h.probes, "failed": h.failed,
        "observed_s": h.observed_s, "up_s": h.up_s, "uptime_percent": up,
        "latency_avg_ms": h.latency_avg_ms, "latency_max_ms": h.latency_max_ms,
    }  # fmt: skip


def metric_hour(h: MetricHour) -> Json:
    return {"hour": iso(h.hour), "n": h.n, "min": h.min, "avg": h.avg, "max": h.max}


def transition(e: Event) -> Json:
    p: Mapping[str, Any] = e.payload
    return {
        "ts": iso(e.ts),
        "from": _text(p.get("from")), "to": _text(p.get("to")) or "unknown",
        "reason": _text(p.get("reason")) or "",
    }  # fmt: skip


def page(limit: int, offset: int, more: bool) -> Json:
    """``next_offset`` is null on the last page, and where the next would be past the
    deepest offset the API pages to (``MAX_OFFSET``: narrow the query instead)."""
    following = offset + limit
    more = more and following <= MAX_OFFSET
    return {"limit": limit, "offset": offset, "next_offset": following if more else None}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
