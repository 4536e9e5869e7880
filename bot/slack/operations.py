"""The ``/orch`` subcommands that change something: silence, unsilence, ack, and the
action requests (restart, pause, resume, clear-cache).

Each re-reads the project from the current config (it may have been reloaded since the
text was parsed) and authorises again, then makes one store call that writes the row and
its event together.  An action asked for by an approver of the project's group is stored
as runnable (the Action Executor runs it at once, counting the budget); one in the
project's ``needs_approval``, or asked for by anyone else, is stored with an approval,
whose card the notifier posts.  No ``/control`` call is ever made from this module.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from agents import actions
from agents.events import (
    INCIDENT_UPDATED,
    SILENCE_CREATED,
    SILENCE_ENDED,
    Event,
)
from agents.incidents import main_incident
from bot.config import Config, Project
from bot.slack import replies
from bot.slack.approvers import Approvers, Verdict
from bot.slack.command_parser import Command
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.views import short_id
from storage.autonomy_store import AuditEntry
from storage.base import EventFor, Incident
from storage.operations_store import (
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


async def approval_needed(
    config: Config, project: Project, action: str, user: str, approvers: Approvers | None
) -> tuple[bool, str]:
    """(needs approval, why) for ``user`` asking for ``action`` on ``project``.

    Approvers are the project's orchestrator's ``approvers``: user ids, and the members of
    user groups (``approvers``; without it only user ids count).  An empty list is
    nobody; a user group that cannot be read counts as "not an approver"."""
    word = action.replace("_", "-")
    if action in project.needs_approval:
        return True, f"{word} on {project.name} always needs an approver."
    verdict = await _verdict(config, project, user, approvers)
    if verdict.why == "no_group":
        return True, f"{project.name} is in no orchestrator group, so it has no approvers."
    if verdict.allowed:
        return False, f"requested by an approver of {project.orchestrator}."
    if verdict.why == "lookup_failed":
        return True, f"the approvers of {project.orchestrator} could not be checked just now."
    return True, f"the requester is not an approver of {project.orchestrator}."


async def _verdict(
    config: Config, project: Project, user: str, approvers: Approvers | None
) -> Verdict:
    if approvers is not None:
        return await approvers.check(config, project, user)
    group = config.orchestrators.get(project.orchestrator or "")
    if group is None or project.orchestrator is None:
        return Verdict(False, "no_group", None)
    listed = user in group.approvers and user[:1] in ("U", "W")
    return Verdict(listed, "approver" if listed else "not_approver", project.orchestrator)


async def request_action(
    services: Services, command: Command, user: str, *, approvers: Approvers | None = None
) -> Reply:
    project = current_project(services, command.project)
    action = command.action
    if project is None or action is None:
        return _gone(command.project)
    if action not in project.allowed_actions:  # authorised again: the config may be new
        allowed = ", ".join(a.replace("_", "-") for a in project.allowed_actions) or "none"
        return replies.error_reply(
            f"{project.name} does not allow {command.name} (allowed: {allowed})"
        )
    needs, why = await approval_needed(services.config(), project, action, user, approvers)
    incidents = await services.store.list_incidents(project=project.name, open_only=True)
    about = main_incident(incidents)
    reason = f"/orch {command.name} in Slack"

    def audit_row(request: ActionRequest) -> AuditEntry:
        # Runs at once: the executor counts it against the budget and audits the run.  This
        # row is written with the request, in one transaction: never one without the other.
        return AuditEntry(
            actor=user, actor_kind="user", action=action, decision="allowed",
            project=project.name, reason=reason, outcome="approver", action_id=request.id,
            details={"why": why},
        )  # fmt: skip

    requested = await actions.request_action(
        services.store, project.name, action, requested_by=user, reason=reason, origin="user",
        needs_approval=needs, incident_id=about.id if about else None, source=SOURCE,
        approval_ttl_s=project.policy.approval_ttl, audit=audit_row,
    )  # fmt: skip
    services.wake()
    request, approval = requested.action, requested.approval
    if approval is None:
        return replies.action_reply(request, why)
    expires = f"{approval.expires_at:%H:%M} UTC"
    why += f" Approval `{short_id(approval.id)}` waits for an approver until {expires}."
    return replies.action_reply(request, why)
