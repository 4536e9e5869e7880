"""The bus vocabulary (DESIGN §4): one envelope, a fixed set of type names."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

# Type names are part of the public contract (JSONL output, the bus, the store).
PROJECT_STATUS_CHANGED: Final = "project.status_changed"
PROJECT_FLAPPING: Final = "project.flapping"
METRIC_ANOMALY: Final = "metric.anomaly"
METRIC_RECOVERED: Final = "metric.recovered"
INCIDENT_OPENED: Final = "incident.opened"
INCIDENT_UPDATED: Final = "incident.updated"
INCIDENT_RESOLVED: Final = "incident.resolved"
ACTION_REQUESTED: Final = "action.requested"
APPROVAL_REQUESTED: Final = "approval.requested"
APPROVAL_GRANTED: Final = "approval.granted"
APPROVAL_DENIED: Final = "approval.denied"
APPROVAL_EXPIRED: Final = "approval.expired"
ACTION_STARTED: Final = "action.started"
ACTION_SUCCEEDED: Final = "action.succeeded"
ACTION_FAILED: Final = "action.failed"
ACTION_VERIFIED: Final = "action.verified"
REMEDIATION_SUSPENDED: Final = "remediation.suspended"
ESCALATION_RAISED: Final = "escalation.raised"
ANALYSIS_COMPLETED: Final = "analysis.completed"
SILENCE_CREATED: Final = "silence.created"
SILENCE_ENDED: Final = "silence.ended"
CONFIG_RELOADED: Final = "config.reloaded"
DIGEST_POSTED: Final = "digest.posted"

EVENT_TYPES: Final = frozenset(
    {
        PROJECT_STATUS_CHANGED, PROJECT_FLAPPING, METRIC_ANOMALY, METRIC_RECOVERED,
        INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED, ACTION_REQUESTED,
        APPROVAL_REQUESTED, APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_EXPIRED,
        ACTION_STARTED, ACTION_SUCCEEDED, ACTION_FAILED, ACTION_VERIFIED,
        REMEDIATION_SUSPENDED, ESCALATION_RAISED, ANALYSIS_COMPLETED, SILENCE_CREATED,
        SILENCE_ENDED, CONFIG_RELOADED, DIGEST_POSTED,
    }
)  # fmt: skip


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    """The envelope. ``id`` is unique; consumers are idempotent on it."""

    type: str
    ts: datetime
    source: str
    payload: dict[str, Any] = field(default_factory=dict)
    project: str | None = None
    incident_id: str | None = None
    id: str = field(default_factory=new_event_id)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if self.ts.tzinfo is None:
            raise ValueError("event ts must be timezone-aware UTC")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "ts": self.ts.isoformat(),
            "source": self.source,
            "project": self.project,
            "incident_id": self.incident_id,
            "payload": self.payload,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            id=data["id"],
            type=data["type"],
            ts=datetime.fromisoformat(data["ts"]),
            source=data["source"],
            project=data.get("project"),
            incident_id=data.get("incident_id"),
            payload=dict(data.get("payload") or {}),
        )
