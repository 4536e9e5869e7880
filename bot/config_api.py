"""``api_users`` in ``projects.yml``: who an HTTP API user is in Slack.

The API (``bot.api``) knows its users by the names in ``ORCH_API_TOKENS``; approving
through it needs the user mapped to a Slack user id here, which must then be an approver
of the project's group (listed, or a member of a listed user group), as for a click::

    api_users: {alice: U012ABC, ci-bot: U0CIBOT}

A user not listed here may read the API but not decide.  The value is a Slack *user* id
(U…, W…), never a user group: a decision is made by one person.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from bot.settings import API_USER_PATTERN


def _user_name(value: str) -> str:
    if not re.fullmatch(API_USER_PATTERN, value):
        raise ValueError(
            "an API user name is lowercase letters, digits, '.', '_' and '-' (as in"
            f" ORCH_API_TOKENS), got {value!r}"
        )
    return value


def _slack_user(value: str) -> str:
    if not re.fullmatch(r"[UW][A-Z0-9]{2,20}", value):
        raise ValueError(f"expected a Slack user id (U…, W…; not a user group), got {value!r}")
    return value


ApiUserName = Annotated[str, AfterValidator(_user_name)]
SlackUserId = Annotated[str, AfterValidator(_slack_user)]
ApiUsers = dict[ApiUserName, SlackUserId]
