"""Strict parsing of the text after ``/orch``.

The text is whatever a Slack user typed, so it is treated as hostile: a length cap, no
control or invisible characters (NUL, RTL overrides, zero-width joiners), subcommands and
project names in plain ASCII only (a Cyrillic ``е`` must not pass for ``e``), and a fixed
arity per subcommand.  Tokens are split on whitespace and nothing else: there is no
quoting, no globbing, no shell, so ``$(reboot)`` or ``x; rm -rf /`` are just words that
fail validation.  Error messages never echo a token unless it is made of safe characters,
so a reply cannot carry mentions or markup the user smuggled in.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bot.config import ACTIONS, Config, parse_duration

MAX_TEXT: Final = 500
MAX_REASON: Final = 200
SILENCE_MIN_S: Final = 60.0
SILENCE_MAX_S: Final = 30 * 86400.0
HISTORY_WINDOWS: Final = ("24h", "7d")

# Subcommand → usage line.  The order is the help order.
USAGE: Final[dict[str, str]] = {
    "help": "help",
    "status": "status [project]",
    "projects": "projects",
    "incidents": "incidents",
    "history": "history <project> [24h|7d]",
    "restart": "restart <project>",
    "pause": "pause <project>",
    "resume": "resume <project>",
    "clear-cache": "clear-cache <project>",
    "silence": "silence <project> <duration> [reason]",
    "unsilence": "unsilence <project>",
    "ack": "ack <incident>",
    "analyze": "analyze <project>",
    "digest": "digest",
    "reload": "reload",
}
# The word users type → the action name in config (`allowed_actions`).
ACTION_OF: Final = {
    "restart": "restart",
    "pause": "pause",
    "resume": "resume",
    "clear-cache": "clear_cache",
}
assert set(ACTION_OF.values()) == set(ACTIONS), "a config action has no /orch word"

# Categories that have no business in a command: controls (NUL, ESC), format characters
# (RTL/LTR overrides, zero-width space/joiners, BOM), surrogates, private use, unassigned,
# and the line/paragraph separators.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SAFE_WORD = re.compile(r"[A-Za-z0-9._-]{1,63}")
_INCIDENT = re.compile(r"[0-9a-f]{6,32}")
# project:condition, e.g. email-blast:down or chatbot:metric:error_rate (bot.config names).
_FINGERPRINT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}:[A-Za-z0-9_.:-]{1,100}")


class CommandError(ValueError):
    """A user-facing, short, safe-to-show reason why the text is not a command."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # a key of USAGE
    project: str | None = None
    window: str | None = None  # history: 24h | 7d
    seconds: float | None = None  # silence duration
    reason: str = ""  # silence reason, free text (already free of control characters)
    incident: str | None = None  # ack: an incident id, its leading part, or a fingerprint

    @property
    def action(self) -> str | None:
        """The config action for restart/pause/resume/clear-cache, else None."""
        return ACTION_OF.get(self.name)


def parse(text: str, config: Config) -> Command:
    """Parse ``text`` against ``config``; raise CommandError with a reply for the user."""
    if len(text) > MAX_TEXT:
        raise CommandError(f"That is too long for /orch (at most {MAX_TEXT} characters).")
    # Slack escapes these three in command text; undo it so `&lt;` is not a word of its own.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text):
        raise CommandError("/orch takes printable text only (no control or invisible characters).")
    words = text.split()
    if not words:
        return Command("help")
    name = _subcommand(words[0])
    args = words[1:]
    if name in ("help", "projects", "incidents", "digest", "reload"):
        _arity(name, args, 0, 0)
        return Command(name)
    if name == "status":
        _arity(name, args, 0, 1)
        return Command(name, project=_project(args[0], config) if args else None)
    if name == "ack":
        _arity(name, args, 1, 1)
        return Command(name, incident=_incident(args[0]))
    if name == "silence":
        _arity(name, args, 2, None)
        project = _project(args[0], config)
        return Command(name, project=project, seconds=_silence(args[1]), reason=_reason(args[2:]))
    if name == "history":
        _arity(name, args, 1, 2)
        project = _project(args[0], config)
        window = args[1] if len(args) > 1 else "24h"
        if window not in HISTORY_WINDOWS:
            raise CommandError("history covers 24h or 7d: /orch history <project> [24h|7d]")
        return Command(name, project=project, window=window)
    # restart | pause | resume | clear-cache | unsilence | analyze: exactly one project
    _arity(name, args, 1, 1)
    command = Command(name, project=_project(args[0], config))
    if command.action is not None:
        _allowed(command.action, config.project(args[0]).allowed_actions, args[0])
    return command


def _subcommand(word: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z-]{0,19}", word):
        raise CommandError("That is not an /orch command; try /orch help.")
    name = word.lower()
    if name not in USAGE:
        close = difflib.get_close_matches(name, list(USAGE), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}" if close else "try /orch help"
        raise CommandError(f"no command {name}; {hint}")
    return name


def _arity(name: str, args: list[str], least: int, most: int | None) -> None:
    if len(args) < least or (most is not None and len(args) > most):
        raise CommandError(f"Usage: /orch {USAGE[name]}")


def _project(word: str, config: Config) -> str:
    names = config.project_names()
    if word in names:
        return word
    if not word.isascii():
        # Homoglyphs: `еmail-blast` with a Cyrillic е looks right and must not match.
        raise CommandError("Project names are plain ASCII (a-z, 0-9 and '-').")
    if not _SAFE_WORD.fullmatch(word):
        raise CommandError("That is not a project name: names are a-z, 0-9 and '-'.")
    close = difflib.get_close_matches(word.lower(), names, n=1, cutoff=0.6)
    if close:
        raise CommandError(f"no project {word}; did you mean {close[0]}")
    raise CommandError(f"no project {word}; /orch projects lists them")


def _allowed(action: str, allowed: Sequence[str], project: str) -> None:
    if action not in allowed:
        listed = ", ".join(a.replace("_", "-") for a in allowed) or "none"
        raise CommandError(
            f"{project} does not allow {action.replace('_', '-')} (allowed: {listed})"
        )


def _silence(word: str) -> float:
    try:
        if not word.isascii():  # `\d` would accept Arabic-Indic digits
            raise ValueError(word)
        seconds = parse_duration(word)
    except ValueError:
        raise CommandError("A duration looks like 30m, 2h or 1d.") from None
    if not SILENCE_MIN_S <= seconds <= SILENCE_MAX_S:
        raise CommandError("A silence lasts from 1m to 30d.")
    return seconds


def _reason(words: list[str]) -> str:
    reason = " ".join(words)
    if len(reason) > MAX_REASON:
        raise CommandError(f"The reason is too long (at most {MAX_REASON} characters).")
    return reason


def _incident(word: str) -> str:
    if word.isascii() and _FINGERPRINT.fullmatch(word):
        return word
    ref = word.lower()
    if not ref.isascii() or not _INCIDENT.fullmatch(ref):
        raise CommandError(
            "An incident is its id (6 to 32 hex digits, see /orch incidents)"
            " or its fingerprint, like email-blast:down."
        )
    return ref
