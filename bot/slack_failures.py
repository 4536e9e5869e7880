"""What a failed Slack write means for the outbox (``bot.slack_outbox``): wait the
channel's ``Retry-After``, back off and retry, pause until an operator fixes the token or
the channel, or give up on this one message (kept as ``failed``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from slack_sdk.errors import SlackApiError

from bot.slack.service import PERMANENT_AUTH_ERRORS

CHANNEL_ERRORS: Final = frozenset(
    {"channel_not_found", "not_in_channel", "is_archived", "team_access_not_granted",
     "restricted_action", "restricted_action_read_only_channel"}
)  # fmt: skip
MESSAGE_ERRORS: Final = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "invalid_attachments", "too_many_attachments",
     "msg_too_long", "no_text", "invalid_arguments", "invalid_arg_name", "invalid_array_arg",
     "invalid_charset", "invalid_form_data", "message_not_found", "cant_update_message",
     "edit_window_closed", "thread_not_found", "invalid_thread_ts", "duplicate_message_not_found"}
)  # fmt: skip
TRANSIENT_ERRORS: Final = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout",
     "team_added_to_org", "ratelimited", "rate_limited"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failure:
    kind: str  # rate_limited | transient | auth | channel | message | unknown
    error: str  # short, for last_error and health; never the message content
    retry_after: float | None = None


def classify(exc: BaseException) -> Failure:
    """What a failed call means for its row (see the module docstring)."""
    if not isinstance(exc, SlackApiError):
        return Failure("transient", type(exc).__name__)  # network error or timeout
    status = exc.response.status_code
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return Failure("rate_limited", f"429 {error}", _retry_after(exc.response.headers))
    for kind, errors in (
        ("auth", PERMANENT_AUTH_ERRORS),
        ("channel", CHANNEL_ERRORS),
        ("message", MESSAGE_ERRORS),
    ):
        if error in errors:
            return Failure(kind, error)
    if status != 200 or error in TRANSIENT_ERRORS:  # 5xx, a proxy's error page…
        return Failure("transient", error)
    return Failure("unknown", error)


def _retry_after(headers: Any) -> float:
    value = (headers.get("Retry-After") or headers.get("retry-after")) if headers else None
    try:
        return max(1.0, float(str(value)))
    except ValueError:
        return 1.0  # Slack always sends it; without it, wait its per-channel second
