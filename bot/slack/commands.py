"""``/orch``: one slash command, one handler per subcommand.

The listener parses (pure, microseconds), acknowledges, and hands the rest to the
background: parse errors and ``help`` are answered in the ack itself (nothing else runs);
every other subcommand acks empty and answers through the response_url once its data is
read, so a slow store never delays the ack.  Each subcommand has a handler in ``HANDLERS``
that returns a ``Reply``; the ones whose features are not built yet say so honestly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.config import Project
from bot.slack import replies
from bot.slack.command_parser import USAGE, Command, CommandError, parse
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.work import is_retry, request_key

log = logging.getLogger(__name__)

SLASH_COMMAND = "/orch"
MAX_INCIDENTS = 20

Handler = Callable[[Services, Command], Awaitable[Reply]]


def register(app: AsyncApp, services: Services) -> None:
    @app.command(SLASH_COMMAND)
    async def orch_command(ack: AsyncAck, body: dict[str, Any], request: AsyncBoltRequest) -> None:
        user = body.get("user_id") if isinstance(body.get("user_id"), str) else "?"
        try:
            command = parse(str(body.get("text") or ""), services.config())
        except CommandError as exc:
            # The reply is ours; the user's text is not logged (it may be anything).
            log.info("/orch refused for %s: %s", user, exc)
            await ack(text=replies.error_reply(str(exc)).text, response_type="ephemeral")
            return
        log.info("/orch %s %s by %s", command.name, command.project or "", user)
        if command.name == "help":
            await ack(text=replies.help_reply().text, response_type="ephemeral")
            return
        await ack()

        async def work() -> None:
            await answer(services, command, body)

        services.background.submit(request_key(body), is_retry(request.headers), work)


async def answer(services: Services, command: Command, body: dict[str, Any]) -> None:
    """Run the subcommand's handler and answer the asker; on failure say so, then raise
    (so the request's retry marker is not committed)."""
    try:
        reply = await HANDLERS[command.name](services, command)
    except Exception:
        try:
            await services.replier.ephemeral(body, replies.failure_reply())
        except Exception:
            log.warning("could not tell the user that /orch %s failed", command.name)
        raise
    await services.replier.ephemeral(body, reply)


class _Gone(Exception):
    """The project was removed by a config reload between parse and answer."""


def _project(services: Services, name: str | None) -> Project:
    try:
        return services.config().project(name or "")
    except KeyError:
        raise _Gone(name) from None


# -- subcommands with data orch has ---------------------------------------------------


async def help_(services: Services, command: Command) -> Reply:
    return replies.help_reply()


async def status(services: Services, command: Command) -> Reply:
    now = services.clock.now()
    statuses = services.statuses()
    if command.project is None:
        incidents = await services.store.list_incidents(open_only=True, limit=1000)
        return replies.status_reply(services.config(), statuses, incidents, now)
    try:
        project = _project(services, command.project)
    except _Gone:
        return replies.error_reply(f"no project {command.project} any more")
    last = await services.store.recent_probes(project.name, limit=1)
    incidents = await services.store.list_incidents(
        project=project.name, open_only=True, limit=MAX_INCIDENTS
    )
    status_now = statuses.get(project.name, "unknown")
    return replies.project_status_reply(
        project, status_now, last[0] if last else None, incidents, now
    )


async def projects(services: Services, command: Command) -> Reply:
    return replies.projects_reply(services.config())


async def incidents(services: Services, command: Command) -> Reply:
    found = await services.store.list_incidents(open_only=True, limit=MAX_INCIDENTS + 1)
    more = len(found) > MAX_INCIDENTS
    return replies.incidents_reply(found[:MAX_INCIDENTS], services.clock.now(), more)


# -- subcommands answered by later issues -----------------------------------------------
# Each is parsed and validated in full already; fill the body in when its feature lands.


async def history(services: Services, command: Command) -> Reply:
    # TODO(history): store.uptime / downtime / mttr / probe_hours over command.window.
    return replies.coming_reply(command, "the history view (uptime, MTTR, latency)")


async def action(services: Services, command: Command) -> Reply:
    # TODO(Autonomy): create an action request (action.requested, needs_approval from the
    # project) for command.action on command.project; Autonomy executes and guards it.
    return replies.coming_reply(command, "autonomous actions (the Autonomy issue)")


async def silence(services: Services, command: Command) -> Reply:
    # TODO(silences): store a silence (project, command.seconds, command.reason, user).
    return replies.coming_reply(command, "silences")


async def unsilence(services: Services, command: Command) -> Reply:
    # TODO(silences): end the project's active silence.
    return replies.coming_reply(command, "silences")


async def ack(services: Services, command: Command) -> Reply:
    # TODO(ack): resolve command.incident (an id prefix) among open incidents, record who.
    return replies.coming_reply(command, "incident acknowledgement")


async def analyze(services: Services, command: Command) -> Reply:
    # TODO(analysis): ask the DecisionAgent (Claude or rules) about command.project.
    return replies.coming_reply(command, "Claude analysis")


async def digest(services: Services, command: Command) -> Reply:
    # TODO(digest): post the health digest now.
    return replies.coming_reply(command, "the daily digest")


HANDLERS: dict[str, Handler] = {
    "help": help_,
    "status": status,
    "projects": projects,
    "incidents": incidents,
    "history": history,
    "restart": action,
    "pause": action,
    "resume": action,
    "clear-cache": action,
    "silence": silence,
    "unsilence": unsilence,
    "ack": ack,
    "analyze": analyze,
    "digest": digest,
}
assert set(HANDLERS) == set(USAGE), "every subcommand needs a handler"
