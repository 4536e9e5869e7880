"""``/orch``: one slash command, one handler per subcommand.

The listener parses (pure, microseconds), acknowledges, and hands the rest to the
background: parse errors and ``help`` are answered in the ack itself (nothing else runs);
every other subcommand acks empty and answers through the response_url once its data is
read, so a slow store never delays the ack.  Each subcommand has a handler in ``HANDLERS``
that returns a ``Reply``: reading ones here, changing ones in ``bot.slack.operations``,
history in ``bot.slack.history``; digest posts every group's digest now.
A reply goes to the asker alone unless it is marked ``in_channel`` (who silenced, acked or
asked for an action is the team's business).  The action requests also get the approvers
(``bot.slack.approvers``): an approver's request runs at once, anyone else's asks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest

from agents.clock import Clock
from agents.decision import ASKED
from agents.events import ESCALATION_RAISED, Event
from agents.incidents import main_incident
from bot.digest_post import post_digest
from bot.slack import fleet, operations, replies
from bot.slack.approvers import Approvers
from bot.slack.command_parser import USAGE, Command, CommandError, parse
from bot.slack.history import history
from bot.slack.operations import current_project
from bot.slack.reload import reload_config
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.work import is_retry, request_key
from storage.base import Incident
from storage.postgres_connect import unreachable, within

log = logging.getLogger(__name__)

SLASH_COMMAND = "/orch"
MAX_INCIDENTS = 20
# /orch status gives the store this long, then answers from live state: its answer
# should reach the asker well within Slack's 3 s, database or not.
STATUS_READ_TIMEOUT_S: Final = 1.5

# (services, the parsed command, the asker's Slack user id) -> the answer
Handler = Callable[[Services, Command, str], Awaitable[Reply]]


def register(app: AsyncApp, services: Services, approvers: Approvers | None = None) -> None:
    handlers = with_approvers(approvers)

    @app.command(SLASH_COMMAND)
    async def orch_command(ack: AsyncAck, body: dict[str, Any], request: AsyncBoltRequest) -> None:
        user = body.get("user_id") if isinstance(body.get("user_id"), str) else "?"
        try:
            command = parse(str(body.get("text") or ""), services.config())
        except CommandError as exc:
            # The reply is ours; the user's text is not logged (it may be anything).
            log.info("/orch refused for %s: %s", user, exc)
            await _ack(ack, replies.error_reply(str(exc)))
            return
        log.info("/orch %s %s by %s", command.name, command.project or "", user)
        if command.name == "help":
            await _ack(ack, replies.help_reply())
            return
        await ack()

        async def work() -> None:
            await answer(services, command, body, handlers)

        services.background.submit(request_key(body), is_retry(request.headers), work)


async def _ack(ack: AsyncAck, reply: Reply) -> None:
    await ack(text=reply.text, blocks=reply.blocks, response_type="ephemeral")


def with_approvers(approvers: Approvers | None) -> dict[str, Handler]:
    """``HANDLERS``, the action requests bound to ``approvers``."""
    request = partial(operations.request_action, approvers=approvers)
    reload = partial(reload_config, approvers=approvers)
    return {**HANDLERS, **dict.fromkeys(ACTION_COMMANDS, request), "reload": reload}


async def answer(
    services: Services,
    command: Command,
    body: dict[str, Any],
    handlers: Mapping[str, Handler] | None = None,
) -> None:
    """Run the subcommand's handler and answer; on failure tell the asker, then raise (so
    the request's retry marker is not committed)."""
    user = body.get("user_id")
    try:
        if not isinstance(user, str) or not user:
            raise ValueError("a slash command without a user_id")  # Slack always sends one
        reply = await (handlers or HANDLERS)[command.name](services, command, user)
    except Exception as exc:
        if unreachable(exc):  # the database is away: say so, not "something failed"
            log.warning("/orch %s refused: database unreachable (%s)", command.name,
                        type(exc).__name__)  # fmt: skip
            action = command.name in ACTION_COMMANDS
            reply = replies.database_down_reply(_typed(command), action=action)
            await services.replier.ephemeral(body, reply)
            return
        try:
            await services.replier.ephemeral(body, replies.failure_reply())
        except Exception:
            log.warning("could not tell the user that /orch %s failed", command.name)
        raise
    if reply.response_type == "in_channel":
        await services.replier.in_channel(body, reply)
    else:
        await services.replier.ephemeral(body, reply)


# -- reading -------------------------------------------------------------------------------


async def help_(services: Services, command: Command, user: str) -> Reply:
    return replies.help_reply()


def _typed(command: Command) -> str:
    return f"/orch {command.name}" + (f" {command.project}" if command.project else "")


async def status(services: Services, command: Command, user: str) -> Reply:
    """From the store; when it cannot be read in time, from live state, saying so."""
    try:
        # Not asyncio.timeout: cancelling a read stuck on a dead link takes asyncpg a
        # minute; ``within`` stops waiting and lets it end on its own.
        return await within(STATUS_READ_TIMEOUT_S, _stored_status(services, command))
    except Exception as exc:
        if not unreachable(exc):  # TimeoutError counts: a database that does not answer
            raise
        why = type(exc).__name__
        if isinstance(exc, TimeoutError):
            why = f"no answer within {STATUS_READ_TIMEOUT_S:g} s"
        log.warning("/orch status answered from live state: database unreachable (%s)", why)
        return _live_status(services, command, why)


def _live_status(services: Services, command: Command, why: str) -> Reply:
    """The degraded answer: the statuses the HealthMonitor holds in memory."""
    statuses = services.statuses()
    if command.project is not None:
        project = current_project(services, command.project)
        if project is None:
            return replies.error_reply(f"no project {command.project} any more")
        status_now = statuses.get(project.name, "unknown")
        return replies.degraded_project_status_reply(project, status_now, why)
    board = fleet.Fleet(dict(statuses), [], {}, services.clock.now())
    return replies.degraded_status_reply(board.rows(services), board.now, why)


async def _stored_status(services: Services, command: Command) -> Reply:
    if command.project is None:
        board = await fleet.read_fleet(services)
        return replies.status_reply(board.rows(services), board.now)
    project = current_project(services, command.project)
    if project is None:
        return replies.error_reply(f"no project {command.project} any more")
    store, now = services.store, services.clock.now()
    last = await store.recent_probes(project.name, limit=1)
    incidents = await store.list_incidents(
        project=project.name, open_only=True, limit=MAX_INCIDENTS
    )
    acks = await store.incident_acks([i.id for i in incidents])
    uptime = (await store.uptime([project.name], now - fleet.DAY, now)).get(project.name)
    silence = await store.active_silence(project.name)
    status_now = services.statuses().get(project.name, "unknown")
    return replies.project_status_reply(
        project, status_now, last[0] if last else None, incidents, acks, uptime, silence, now
    )


async def projects(services: Services, command: Command, user: str) -> Reply:
    return replies.projects_reply(services.config())


async def incidents(services: Services, command: Command, user: str) -> Reply:
    found = await services.store.list_incidents(open_only=True, limit=MAX_INCIDENTS + 1)
    shown = found[:MAX_INCIDENTS]
    acks = await services.store.incident_acks([i.id for i in shown])
    return replies.incidents_reply(shown, acks, services.clock.now(), len(found) > MAX_INCIDENTS)


# -- subcommands answered by later issues -----------------------------------------------
# Each is parsed and validated in full already; fill the body in when its feature lands.


async def analyze(services: Services, command: Command, user: str) -> Reply:
    """Ask for an analysis of the project's open incident.  It takes up to 30 s (Claude),
    so it is not done here: the request is an event (``agents.decision`` answers it on
    whichever replica, in the incident's thread)."""
    name = command.project or ""
    incidents = await services.store.list_incidents(project=name, open_only=True)
    incident = main_incident(incidents)
    if incident is None:
        return replies.error_reply(
            f"{name} has no open incident to analyse.", "/orch status shows how it is now."
        )
    await services.store.append_events([analysis_request(incident, user, services.clock)])
    services.wake()
    return replies.notice_reply(
        "🔎", f"Analysing {name} ({incident.summary[:80]}); the answer comes in the incident's"
        " thread, asked by", mention_id=user, after=".",
    )  # fmt: skip


def analysis_request(incident: Incident, user: str, clock: Clock) -> Event:
    context = {"summary": f"<@{user}> asked for an analysis", "requested_by": user}
    return Event(ESCALATION_RAISED, clock.now(), "slack",
                 {"reason": ASKED, "context": context}, incident.project, incident.id)  # fmt: skip


async def digest(services: Services, command: Command, user: str) -> Reply:
    """Post every group's health digest now, each in its group's channel, through the
    Slack outbox (``bot.digest_post``).  Not the daily one: that is still posted at its
    time (``bot.digest_job``)."""
    config, now = services.config(), services.clock.now()
    posted: list[tuple[str, str]] = []
    for group in sorted(config.orchestrators):
        key = f"digest:{group}:asked:{uuid.uuid4().hex}"
        if await post_digest(services.store, config, group, now, key=key, source="slack"):
            posted.append((group, config.orchestrators[group].channel))
    services.wake()  # the digest.posted events
    return replies.digest_reply(posted)


ACTION_COMMANDS = ("restart", "pause", "resume", "clear-cache")
HANDLERS: dict[str, Handler] = {
    "help": help_,
    "status": status,
    "projects": projects,
    "incidents": incidents,
    "history": history,
    "restart": operations.request_action,
    "pause": operations.request_action,
    "resume": operations.request_action,
    "clear-cache": operations.request_action,
    "silence": operations.silence,
    "unsilence": operations.unsilence,
    "ack": operations.ack,
    "analyze": analyze,
    "digest": digest,
    "reload": reload_config,  # with no approvers bound: refused (see with_approvers)
}
assert set(HANDLERS) == set(USAGE), "every subcommand needs a handler"
