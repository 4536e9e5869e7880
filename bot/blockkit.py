"""Block Kit limit checks: the last line of defence before a payload goes to Slack.

Slack answers an over-limit payload with ``invalid_blocks`` and posts nothing, so an
incident card that is one character too long is an incident nobody hears about.  The
templates truncate values themselves (``bot.render``); these checks catch what a template
got wrong, with a path precise enough to fix it (``blocks[3].text.text: 3012 characters
(limit 3000)``).

Only the block and element types orch's templates use are accepted: an unknown type is
reported rather than waved through unchecked.
"""

from __future__ import annotations

from typing import Any, Final

MESSAGE_BLOCKS: Final = 50
VIEW_BLOCKS: Final = 100  # Home tab and modals
MESSAGE_TEXT: Final = 40_000  # top-level ``text`` (Slack truncates beyond; we refuse)
SECTION_TEXT: Final = 3_000
CONTEXT_TEXT: Final = 3_000
HEADER_TEXT: Final = 150
FIELDS: Final = 10
FIELD_TEXT: Final = 2_000
CONTEXT_ELEMENTS: Final = 10
ACTIONS_ELEMENTS: Final = 25
BUTTON_TEXT: Final = 75
BUTTON_VALUE: Final = 2_000
ACTION_ID: Final = 255
BLOCK_ID: Final = 255
URL: Final = 3_000
ALT_TEXT: Final = 2_000
CALLBACK_ID: Final = 255
PRIVATE_METADATA: Final = 3_000
CONFIRM_TITLE: Final = 100
CONFIRM_TEXT: Final = 300
CONFIRM_BUTTON: Final = 30


class BlockKitError(ValueError):
    """A payload Slack would reject; ``problems`` lists every violation with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def slack_len(text: str) -> int:
    """Length in UTF-16 code units.

    Slack does not say how it counts; UTF-16 units are never fewer than code points (an
    emoji outside the BMP counts 2), so a text that passes here passes there too.
    """
    return len(text.encode("utf-16-le")) // 2


def check_message(payload: Any) -> list[str]:
    """Every problem in a ``chat.postMessage`` / ``chat.update`` / response payload."""
    if not isinstance(payload, dict):
        return [f"payload: expected an object, got {type(payload).__name__}"]
    problems: list[str] = []
    text = payload.get("text")
    if text is not None:
        _text_value(problems, "text", text, MESSAGE_TEXT)
    blocks = payload.get("blocks", [])
    attachments = payload.get("attachments", [])
    if not text and not blocks and not attachments:
        problems.append("payload: needs text, blocks or attachments")
    total = _blocks(problems, "blocks", blocks)
    if not isinstance(attachments, list):
        problems.append("attachments: expected a list")
        attachments = []
    for i, attachment in enumerate(attachments):
        path = f"attachments[{i}]"
        if not isinstance(attachment, dict):
            problems.append(f"{path}: expected an object")
            continue
        total += _blocks(problems, f"{path}.blocks", attachment.get("blocks", []))
    # Slack counts the blocks of attachments against the same message limit.
    if total > MESSAGE_BLOCKS:
        problems.append(f"blocks: {total} blocks in the message (limit {MESSAGE_BLOCKS})")
    return problems


def check_view(payload: Any) -> list[str]:
    """Every problem in a ``views.publish`` (home) or ``views.open`` (modal) view."""
    if not isinstance(payload, dict):
        return [f"view: expected an object, got {type(payload).__name__}"]
    problems: list[str] = []
    if payload.get("type") not in ("home", "modal"):
        problems.append(f"type: expected home or modal, got {payload.get('type')!r}")
    for key, limit in (("callback_id", CALLBACK_ID), ("private_metadata", PRIVATE_METADATA)):
        if key in payload:
            _text_value(problems, key, payload[key], limit)
    total = _blocks(problems, "blocks", payload.get("blocks", []))
    if total > VIEW_BLOCKS:
        problems.append(f"blocks: {total} blocks in the view (limit {VIEW_BLOCKS})")
    return problems


def validate_message(payload: Any) -> None:
    problems = check_message(payload)
    if problems:
        raise BlockKitError(problems)


def validate_view(payload: Any) -> None:
    problems = check_view(payload)
    if problems:
        raise BlockKitError(problems)


# -- blocks -------------------------------------------------------------------------------


def _blocks(problems: list[str], path: str, blocks: Any) -> int:
    if not isinstance(blocks, list):
        problems.append(f"{path}: expected a list")
        return 0
    for i, block in enumerate(blocks):
        _block(problems, f"{path}[{i}]", block)
    return len(blocks)


def _block(problems: list[str], path: str, block: Any) -> None:
    if not isinstance(block, dict):
        problems.append(f"{path}: expected an object")
        return
    if "block_id" in block:
        _text_value(problems, f"{path}.block_id", block["block_id"], BLOCK_ID)
    kind = block.get("type")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(f"{path}: a section needs text or fields")
        if "text" in block:
            _text_object(problems, f"{path}.text", block["text"], SECTION_TEXT)
        if "fields" in block:
            _fields(problems, f"{path}.fields", block["fields"])
        if "accessory" in block:
            _element(problems, f"{path}.accessory", block["accessory"])
    elif kind == "header":
        _text_object(problems, f"{path}.text", block.get("text"), HEADER_TEXT, plain=True)
    elif kind == "context":
        _list(problems, f"{path}.elements", block.get("elements"), CONTEXT_ELEMENTS, _context_el)
    elif kind == "actions":
        elements = block.get("elements")
        _list(problems, f"{path}.elements", elements, ACTIONS_ELEMENTS, _element)
        _unique_action_ids(problems, f"{path}.elements", elements)
    elif kind == "image":
        _text_value(problems, f"{path}.image_url", block.get("image_url"), URL)
        _text_value(problems, f"{path}.alt_text", block.get("alt_text"), ALT_TEXT)
    elif kind != "divider":
        problems.append(f"{path}.type: unsupported block type {kind!r}")


def _fields(problems: list[str], path: str, fields: Any) -> None:
    def one(problems: list[str], p: str, field: Any) -> None:
        _text_object(problems, p, field, FIELD_TEXT)

    _list(problems, path, fields, FIELDS, one)


def _context_el(problems: list[str], path: str, element: Any) -> None:
    if isinstance(element, dict) and element.get("type") == "image":
        _element(problems, path, element)
    else:
        _text_object(problems, path, element, CONTEXT_TEXT)


def _element(problems: list[str], path: str, element: Any) -> None:
    if not isinstance(element, dict):
        problems.append(f"{path}: expected an object")
        return
    kind = element.get("type")
    if kind == "button":
        _text_object(problems, f"{path}.text", element.get("text"), BUTTON_TEXT, plain=True)
        _text_value(problems, f"{path}.action_id", element.get("action_id"), ACTION_ID)
        if "value" in element:
            _text_value(problems, f"{path}.value", element["value"], BUTTON_VALUE)
        if "url" in element:
            _text_value(problems, f"{path}.url", element["url"], URL)
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"{path}.style: expected primary or danger")
        if "confirm" in element:
            _confirm(problems, f"{path}.confirm", element["confirm"])
    elif kind == "image":
        _text_value(problems, f"{path}.image_url", element.get("image_url"), URL)
        _text_value(problems, f"{path}.alt_text", element.get("alt_text"), ALT_TEXT)
    else:
        problems.append(f"{path}.type: unsupported element type {kind!r}")


def _confirm(problems: list[str], path: str, confirm: Any) -> None:
    if not isinstance(confirm, dict):
        problems.append(f"{path}: expected an object")
        return
    _text_object(problems, f"{path}.title", confirm.get("title"), CONFIRM_TITLE, plain=True)
    _text_object(problems, f"{path}.text", confirm.get("text"), CONFIRM_TEXT)
    for key in ("confirm", "deny"):
        _text_object(problems, f"{path}.{key}", confirm.get(key), CONFIRM_BUTTON, plain=True)


def _unique_action_ids(problems: list[str], path: str, elements: Any) -> None:
    if not isinstance(elements, list):
        return
    seen: set[str] = set()
    for i, element in enumerate(elements):
        action_id = element.get("action_id") if isinstance(element, dict) else None
        if action_id in seen:
            problems.append(f"{path}[{i}].action_id: {action_id!r} repeats in this block")
        if isinstance(action_id, str):
            seen.add(action_id)


# -- text ---------------------------------------------------------------------------------


def _list(problems: list[str], path: str, items: Any, limit: int, check: Any) -> None:
    if not isinstance(items, list) or not items:
        problems.append(f"{path}: expected a non-empty list")
        return
    if len(items) > limit:
        problems.append(f"{path}: {len(items)} items (limit {limit})")
    for i, item in enumerate(items):
        check(problems, f"{path}[{i}]", item)


def _text_object(
    problems: list[str], path: str, obj: Any, limit: int, *, plain: bool = False
) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{path}: expected a text object")
        return
    allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if obj.get("type") not in allowed:
        problems.append(f"{path}.type: expected {' or '.join(allowed)}, got {obj.get('type')!r}")
    _text_value(problems, f"{path}.text", obj.get("text"), limit)


def _text_value(problems: list[str], path: str, value: Any, limit: int) -> None:
    if not isinstance(value, str):
        problems.append(f"{path}: expected a string, got {type(value).__name__}")
        return
    if not value:
        problems.append(f"{path}: empty (Slack refuses empty text)")
        return
    length = slack_len(value)
    if length > limit:
        problems.append(f"{path}: {length} characters (limit {limit})")
