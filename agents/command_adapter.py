"""The command adapter: how orch acts on a project that does not speak the contract
(DESIGN §3: ``kind: http`` / ``prometheus`` with ``control_commands`` in the config).

The argv comes from ``projects.yml`` only (``project.control_commands[action]``), never
from Slack or Claude, and runs without a shell (``create_subprocess_exec``), so no text
is ever interpreted as shell syntax.  The process gets its own session (process group):
on timeout the whole group is killed, children included, and the outcome is *unknown*
(the command may have done its work before it hung).  stdout and stderr are captured
together, bounded (only the tail is kept) and redacted before anyone sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agents.redact import redact

OUTPUT_LIMIT: Final = 4096  # characters of output kept (the tail)
_RAW_LIMIT: Final = 2 * OUTPUT_LIMIT  # bytes read into memory before redaction
_CHUNK: Final = 4096
_DRAIN_AFTER_KILL_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    outcome: str  # accepted (exit 0) | refused (non-zero, or could not start) | unknown
    exit_code: int | None  # None: it did not start, or was killed on timeout
    output: str  # the redacted tail of stdout+stderr
    error: str | None  # for people, when not accepted


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self._limit]
            self.truncated = True

    def text(self) -> str:
        # Redact before cutting to the limit: a secret straddling the cut is then either
        # wholly redacted or wholly cut away (a partial one can only sit in the first
        # _RAW_LIMIT - OUTPUT_LIMIT characters, which are dropped).
        text = redact(self._buf.decode("utf-8", errors="replace"))
        if self.truncated or len(text) > OUTPUT_LIMIT:
            text = "…" + text[-(OUTPUT_LIMIT - 1) :]
        return text


async def run_command(
    argv: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell) for at most ``timeout`` seconds; never raises (except
    ``CancelledError``, after killing the process group)."""
    if not argv:
        return CommandResult("refused", None, "", "no command configured")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:  # not found, not executable: it certainly did not run
        return CommandResult(
            "refused", None, "", redact(f"cannot run {argv[0]}: {type(exc).__name__}: {exc}")
        )
    tail = _Tail(_RAW_LIMIT)
    reader = asyncio.ensure_future(_read(proc, tail))
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()  # the reader drains the pipe meanwhile: no deadlock
    except TimeoutError:
        _kill_group(proc)
        await _finish(proc, reader)
        output = tail.text()
        error = f"{argv[0]} timed out after {timeout:g} s and was killed; outcome unknown"
        return CommandResult("unknown", None, output, _with_output(error, output))
    except BaseException:  # cancelled: leave nothing running behind us
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await _finish(proc, reader)
        raise
    # Exited.  A child it left running in the background may still hold the pipe: take
    # what is there, briefly, but never kill what the command deliberately started.
    await _finish(proc, reader)
    output = tail.text()
    if code == 0:
        return CommandResult("accepted", 0, output, None)
    return CommandResult("refused", code, output, _with_output(f"{argv[0]} exited {code}", output))


async def _read(proc: asyncio.subprocess.Process, tail: _Tail) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(_CHUNK):
        tail.add(chunk)


async def _finish(proc: asyncio.subprocess.Process, reader: asyncio.Future[None]) -> None:
    """Reap the process and let the reader reach EOF, within a bound (a child that left
    the group, or one started in the background, may hold the pipe open)."""
    try:
        async with asyncio.timeout(_DRAIN_AFTER_KILL_S):
            await proc.wait()
            await reader
    except TimeoutError:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid: start_new_session


def _with_output(error: str, output: str) -> str:
    last = output.strip()
    return f"{error}: {last[-500:]}" if last else error
