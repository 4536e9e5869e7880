"""Sharing a file from the Slack outbox (``bot.slack_outbox``, kind ``upload``).

The row's payload holds the file itself, base64 in JSON (``file_payload``), so a restart
or another replica sends exactly what was queued; charts are tens of kilobytes.
``files_upload_v2`` is three steps (``files.getUploadURLExternal``, an HTTP POST of the
bytes to the URL Slack gave, ``files.completeUploadExternal``).  Slack errors of the first
and last steps are ``SlackApiError`` and are classified like any other write; slack_sdk
reports a refused POST as ``SlackRequestError``, which the outbox treats as final, so it is
turned into ``UploadHTTPError`` here: a network-level failure, retried with back-off.  A
payload without a readable PNG can never succeed: ``SlackRequestError`` (failed for good).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import aiohttp
from slack_sdk.errors import SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_UPLOAD_FAILED: Final = "Failed to upload a file"  # slack_sdk's message for step 2


class UploadHTTPError(aiohttp.ClientError):
    """The upload URL answered an HTTP error (step 2): retried like a network error."""


def file_payload(data: bytes, filename: str, title: str, alt_text: str) -> dict[str, Any]:
    """The ``file`` entry of an upload row's payload."""
    return {"name": filename, "title": title, "alt": alt_text,
            "png": base64.b64encode(data).decode("ascii")}  # fmt: skip


def file_bytes(payload: dict[str, Any]) -> bytes:
    file = payload.get("file")
    try:
        data = base64.b64decode(str(file["png"]), validate=True)  # type: ignore[index]
    except (KeyError, TypeError, binascii.Error) as exc:
        raise SlackRequestError("upload row without a readable file") from exc
    if not data.startswith(PNG_MAGIC):
        raise SlackRequestError("upload row whose file is not a PNG")
    return data


async def upload_file(api: AsyncWebClient, channel: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Share the row's file in ``channel`` (a channel id); the answer as ``_call`` wants it."""
    data = file_bytes(payload)
    file: dict[str, Any] = payload["file"]
    try:
        await api.files_upload_v2(
            channel=channel, file=data, filename=str(file.get("name") or "chart.png"),
            title=str(file.get("title") or ""), alt_txt=str(file.get("alt") or "")[:1000],
        )  # fmt: skip
    except SlackRequestError as exc:
        if str(exc).startswith(_UPLOAD_FAILED):
            raise UploadHTTPError("upload URL refused the file") from exc
        raise
    return {"ts": None, "channel": channel}
