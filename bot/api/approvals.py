"""GET /approvals (pending) and POST /approvals/{id}/approve | /deny.

Deciding goes the way a Slack click goes (``agents.approving``): the approval is read by
id, its project and action are read from the config as it is now, the caller is
authorised, and the store's compare-and-set decides, with four-eyes from the project's
policy and its audit row and event in one transaction.  Of any number of calls (the API,
Slack, ``orch approve``, on any replica) exactly one decides; the others get 409 with who
decided and when.  Every attempt is an audit row: the store's for each decision tried,
``refuse``'s for each refused before.

Who may decide: in local mode the local operator (audited as the OS user, actor kind
``operator``); in token mode an API user mapped in ``api_users`` to a Slack user who is an
approver of the project's group (audited as that Slack user, actor kind ``user``).
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from agents.approving import Refusal, decide, is_approval_id, note, preflight, refuse
from bot.api import shapes
from bot.api.auth import Principal
from bot.api.context import ApiContext, Call, configured
from bot.api.errors import ApiError, json_response
from bot.config import Config, Project
from storage.autonomy_store import Approval, Decision, DecisionResult

SOURCE: Final = "api"
MAX_REASON: Final = 500
_WORD: Final = {"granted": "approved", "denied": "denied"}


async def list_approvals(api: ApiContext, call: Call) -> web.StreamResponse:
    q = call.query
    project = q["project"]
    if project is not None:
        project = configured(api.config(), project, "query.project").name
    limit, offset = q["limit"], q["offset"]
    rows = await api.store.pending_approvals(project)
    page = rows[offset : offset + limit]
    config = api.config()
    items = []
    for a in page:
        # What the caller may do, by the very checks a decision makes: the page hides the
        # buttons of the approvals it may not decide (the server refuses those anyway).
        refusal = await _may_decide(api, config, call.who, a)
        items.append({**shapes.approval(a), "can_decide": refusal is None,
                      "why_not": None if refusal is None else refusal.why})  # fmt: skip
    more = len(rows) > offset + limit
    return json_response({"items": items, "page": shapes.page(limit, offset, more)})


async def approve(api: ApiContext, call: Call) -> web.StreamResponse:
    return await _decide(api, call, "granted")


async def deny(api: ApiContext, call: Call) -> web.StreamResponse:
    return await _decide(api, call, "denied")


async def _decide(api: ApiContext, call: Call, decision: Decision) -> web.StreamResponse:
    reason = await _reason(call.request)
    store, who = api.store, call.who
    config = api.config()
    slack_user = None if who.local else config.api_users.get(who.name)
    actor = who.name if who.local else (slack_user or f"api:{who.name}")
    kind = "operator" if who.local else "user"
    extra: dict[str, Any] = {"via": SOURCE} if who.local else {"via": SOURCE, "api_user": who.name}

    async def refused(approval: Approval | None, outcome: str, why: str, value: str = "") -> None:
        await refuse(store, actor, decision, approval, outcome, why, value=value,
                     actor_kind=kind, extra=extra)  # fmt: skip

    ref = call.path("id")
    approval = await store.get_approval(ref) if is_approval_id(ref) else None
    if approval is None:
        why = f"no approval {ref[:64]!r}"
        await refused(None, "not_found", why, value=ref)
        raise ApiError(404, "unknown_approval", why, where="path.id")
    checked = preflight(config, approval, decision)
    if isinstance(checked, Refusal):
        await refused(approval, checked.outcome, checked.why)
        raise ApiError(409, checked.outcome, f"{checked.why}; nothing was decided",
                       details={"approval": shapes.approval(approval)})  # fmt: skip
    project = checked
    denied = await authorise(api, config, who, project)
    if denied is not None:
        await refused(approval, denied.outcome, denied.why)
        raise ApiError(403, "not_an_approver", denied.why)
    result = await decide(store, approval, decision, actor, four_eyes=project.policy.four_eyes,
                          actor_kind=kind, source=SOURCE)  # fmt: skip
    if reason:
        await note(store, actor, kind, decision, result, reason, extra=extra)
    api.wake()  # the decision's event goes out now: an approved action runs at once
    return _answer(result, decision, actor)


async def authorise(
    api: ApiContext, config: Config, who: Principal, project: Project
) -> Refusal | None:
    """None when ``who`` may decide ``project``'s approvals, else why not: the local
    operator may; an API user must be mapped (``api_users``) to a Slack approver of the
    project's group, as for a Slack click (``bot.slack.approvers``)."""
    if who.local:
        return None
    slack_user = config.api_users.get(who.name)
    if slack_user is None:
        why = f"{who.name} is not mapped to a Slack user (api_users), so it may only read"
        return Refusal("not_mapped", why)
    verdict = await api.approvers.check(config, project, slack_user)
    if verdict.allowed:
        return None
    return Refusal(verdict.why, f"{who.name} ({slack_user}) is {verdict.explain(project.name)}")


async def _may_decide(
    api: ApiContext, config: Config, who: Principal, approval: Approval
) -> Refusal | None:
    checked = preflight(config, approval, "denied")  # deny: possible whatever is allowed
    if isinstance(checked, Refusal):
        return checked
    return await authorise(api, config, who, checked)


def _answer(result: DecisionResult, decision: Decision, actor: str) -> web.StreamResponse:
    a = result.approval
    if a is None or result.outcome == "not_found":
        raise ApiError(404, "unknown_approval", "the approval is gone", where="path.id")
    shown = shapes.approval(a)
    if result.won:
        return json_response({"outcome": "won", "decision": decision, "approval": shown})
    if result.outcome == "already_decided":
        word = _WORD.get(a.state, a.state)
        raise ApiError(409, "already_decided",
                       f"already {word} by {a.decided_by} at {shapes.iso(a.decided_at)};"
                       " nothing changed",
                       details={"approval": shown})  # fmt: skip
    if result.outcome == "expired":
        raise ApiError(409, "expired", f"it expired at {shapes.iso(a.expires_at)}; nothing runs",
                       details={"approval": shown})  # fmt: skip
    raise ApiError(403, "four_eyes", f"{actor} asked for this action; another approver must"
                   " approve it", details={"approval": shown})  # fmt: skip


async def _reason(request: web.Request) -> str:
    """The optional body ``{"reason": "..."}``; 400 for anything else."""
    raw = await request.read()
    if not raw.strip():
        return ""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(400, "bad_body", "the body must be JSON (Content-Type: application/json)",
                       where="body")  # fmt: skip
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "bad_body", "the body is not valid JSON", where="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_body", 'the body must be a JSON object like {"reason": "..."}',
                       where="body")  # fmt: skip
    for key in data:
        if key != "reason":
            raise ApiError(400, "bad_body", f"unknown field {key[:40]!r}; the body may hold"
                           " only reason", where=f"body.{key[:40]}")  # fmt: skip
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ApiError(400, "bad_body", f"reason must be text of at most {MAX_REASON} characters",
                       where="body.reason")  # fmt: skip
    return reason.strip()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
