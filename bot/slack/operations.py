"""The ``/orch`` subcommands that change something: silence, unsilence, ack, and the
action requests (restart, pause, resume, clear-cache).

Each re-reads the project from the current config (it may have been reloaded since the
text was parsed) and authorises again, then makes one store call that writes the row and
its event together.  Action requests are only recorded here: issue "Autonomy" approves,
executes and guards them, so no ``/control`` call is ever made from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from agents.events import (
    ACTION_REQUESTED,
    INCIDENT_UPDATED,
    SILENCE_CREATED,
    SILENCE_ENDED,
    Event,
)
from bot.config import Config, Project
from bot.slack import replies
from bot.slack.command_parser import Command
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.views import short_id
from storage.base import EventFor, Incident
from storage.operations_store import (
    ActionEventFor,
    ActionRequest,
    AmbiguousIncident,
    Silence,
    SilenceEventFor,
)

SOURCE: Final = "slack"


def current_project(services: Services, name: str | None) -> Project | None:
    """The project as configured now; None when a reload removed it since parsing."""
    try:
        return services.config().project(name or "")
    except KeyError:
        return None


def _gone(name: str | None) -> Reply:
    return replies.error_reply(f"no project {name} any more (the configuration changed)")


# -- events, built from the rows as stored ---------------------------------------------


def silence_event(kind: str, by: str) -> SilenceEventFor:
    def build(silence: Silence) -> Event:
        payload = {"silence_id": silence.id, "until": silence.ends_at.isoformat(),
                   "reason": silence.reason, "by": by}  # fmt: skip
        at = silence.ended_at if kind == SILENCE_ENDED and silence.ended_at else silence.starts_at
        return Event(kind, at, SOURCE, payload, project=silence.project)

    return build


def ack_event(by: str, at: datetime) -> EventFor:
    def build(incident: Incident) -> Event:
        payload = {"fingerprint": incident.fingerprint, "severity": incident.severity,
                   "summary": incident.summary, "acked_by": by}  # fmt: skip
        return Event(INCIDENT_UPDATED, at, SOURCE, payload, incident.project, incident.id)

    return build


def action_event(incident_id: str | None) -> ActionEventFor:
    """``incident_id``: the incident the request is about, so that its card's thread
    shows the request (the notifier threads any event that carries one)."""

    def build(request: ActionRequest) -> Event:
        payload = {"action_id": request.id, "action": request.action,
                   "requested_by": request.requested_by, "reason": request.reason,
                   "needs_approval": request.needs_approval}  # fmt: skip
        return Event(ACTION_REQUESTED, request.created_at, SOURCE, payload,
                     request.project, incident_id)  # fmt: skip

    return build


# -- silences --------------------------------------------------------------------------


async def silence(services: Services, command: Command, user: str) -> Reply:
    project = current_project(services, command.project)
    if project is None or command.seconds is None:
        return _gone(command.project)
    # The store's clock decides when a silence is active: "for 2h" starts there.
    until = await services.store.db_now() + timedelta(seconds=command.seconds)
    made = await services.store.create_silence(
        project.name, until, command.reason, user, silence_event(SILENCE_CREATED, user)
    )
    return replies.silence_reply(made, user)


async def unsilence(services: Services, command: Command, user: str) -> Reply:
    project = current_project(services, command.project)
    if project is None:
        return _gone(command.project)
    ended = await services.store.end_silence(project.name, user, silence_event(SILENCE_ENDED, user))
    if ended is None:
        return replies.error_reply(f"{project.name} is not silenced; nothing was changed.")
    return replies.unsilence_reply(ended, user)


# -- acknowledgement ---------------------------------------------------------------------


async def ack(services: Services, command: Command, user: str) -> Reply:
    ref = command.incident or ""
    at = await services.store.db_now()
    try:
        incident = await services.store.ack_incident(ref, user, at, ack_event(user, at))
    except AmbiguousIncident as exc:
        shown = ", ".join(short_id(i) for i in exc.ids[:5])
        return replies.error_reply(
            f"{ref} matches {len(exc.ids)} open incidents ({shown}); type more of the id."
        )
    if incident is None:
        return replies.error_reply(
            f"No open incident matches {ref}.", "/orch incidents lists them with their ids."
        )
    return replies.ack_reply(incident, user)


# -- action requests -----------------------------------------------------------------------


def approval_needed(config: Config, project: Project, action: str, user: str) -> tuple[bool, str]:
    """(needs approval, why) for ``user`` asking for ``action`` on ``project``.

    Approvers are the project's orchestrator's ``approvers``; only user ids count for now
    (user groups are resolved with the Autonomy issue), and an empty list is nobody."""
    word = action.replace("_", "-")
    if action in project.needs_approval:
        return True, f"{word} on {project.name} always needs an approver."
    group = config.orchestrators.get(project.orchestrator or "")
    if group is None:
        return True, f"{project.name} is in no orchestrator group, so it has no approvers."
    users = [a for a in group.approvers if a[0] in "UW"]  # S…: a user group, not yet resolved
    if user in users:
        return False, f"requested by an approver of {project.orchestrator}."
    return True, f"the requester is not an approver of {project.orchestrator}."


async def request_action(services: Services, command: Command, user: str) -> Reply:
    project = current_project(services, command.project)
    action = command.action
    if project is None or action is None:
        return _gone(command.project)
    if action not in project.allowed_actions:  # authorised again: the config may be new
        allowed = ", ".join(a.replace("_", "-") for a in project.allowed_actions) or "none"
        return replies.error_reply(
            f"{project.name} does not allow {command.name} (allowed: {allowed})"
        )
    needs, why = approval_needed(services.config(), project, action, user)
    incidents = await services.store.list_incidents(project=project.name, open_only=True)
    about = _main_incident(incidents)
    request = await services.store.request_action(
        project.name, action, user, f"/orch {command.name} in Slack", needs,
        action_event(about.id if about else None),
    )  # fmt: skip
    return replies.action_reply(request, why)


def _main_incident(incidents: Sequence[Incident]) -> Incident | None:
    # The project being down is what a restart is usually about; else the newest.
    down = [i for i in incidents if i.condition == "down"]
    return next(iter(down or incidents), None)
