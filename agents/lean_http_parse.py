"""Reading one HTTP/1.1 answer out of a byte buffer, for the lean probe client.

Only what a probe needs, strictly: the status line, the header fields, and a body framed
by Content-Length, chunked transfer coding, or the end of the connection (RFC 9112 §6).
Functions take the connection's ``bytearray`` and consume what they parsed from its
front, so a keep-alive connection's next answer starts at offset 0.

Anything that does not parse is an error naming what was wrong (``InvalidHead`` for the
status line and headers, ``BrokenBody`` for the framing of the body); the connection it
came from is never used again (agents.lean_http).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

MAX_HEAD = 64 * 1024  # status line + header fields; aiohttp's own limits are about this
_MAX_CHUNK_LINE = 4096
_NO_BODY = frozenset((204, 304))
_HEX = b"0123456789abcdefABCDEF"


class InvalidHead(Exception):
    """The status line or header fields are not HTTP; ``str()`` says what was wrong."""


class BrokenBody(Exception):
    """The body's framing (chunk sizes, compression) is broken."""


class AnswerTooLarge(Exception):
    """The body is over the cap: ``length`` is the announced Content-Length, or None when
    the body was cut off while reading."""

    def __init__(self, length: int | None) -> None:
        super().__init__(length)
        self.length = length


class Head(NamedTuple):
    """An answer's status line and header fields, framed.  A named tuple: one is made per
    answer, and a tuple is made several times faster than a frozen dataclass."""

    status: int
    headers: dict[str, str]  # lower-case names; a repeated field's values joined by ", "
    keep_alive: bool  # the server lets the connection carry another request
    length: int | None  # body bytes announced; None: chunked or until the connection ends
    chunked: bool


def parse_head(buf: bytearray) -> Head | None:
    """The answer's head from the front of ``buf`` (consumed), or None while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end >= 0:
        size = end + 4
        lines = buf[:end].decode("latin-1").split("\r\n")
    else:
        end = buf.find(b"\n\n")  # bare LF line ends: tolerated, as most clients do
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise InvalidHead(f"header section longer than {MAX_HEAD // 1024} KiB")
            return None
        size = end + 2
        lines = [line.rstrip("\r") for line in buf[:end].decode("latin-1").split("\n")]
    if end > MAX_HEAD:
        raise InvalidHead(f"header section longer than {MAX_HEAD // 1024} KiB")
    del buf[:size]
    status_line = lines[0]
    # "HTTP/1.1 200 OK", "HTTP/1.1 200" (no reason phrase)
    if (
        len(status_line) < 12
        or not status_line.startswith("HTTP/1.")
        or status_line[7] not in "01"
        or status_line[8] != " "
        or not status_line[9:12].isdigit()
        or (len(status_line) > 12 and status_line[12] != " ")
    ):
        raise InvalidHead(f"bad status line {_show(status_line)}")
    status = int(status_line[9:12])
    if status < 100:
        raise InvalidHead(f"bad status line {_show(status_line)}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[0] in " \t" or name[-1] in " \t" or "\n" in line:
            raise InvalidHead(f"bad header line {_show(line)}")
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key == "content-length" and headers[key] != value:
                raise InvalidHead("conflicting Content-Length fields")
            if key != "content-length":
                headers[key] = f"{headers[key]}, {value}"
        else:
            headers[key] = value
    return _frame(status, status_line[7] == "1", headers)


def _frame(status: int, http11: bool, headers: dict[str, str]) -> Head:
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    if status < 200 or status in _NO_BODY:
        return Head(status, headers, keep_alive, 0, False)
    coding = headers.get("transfer-encoding")
    if coding is not None:
        # Chunked last: chunked framing (a Content-Length beside it is ignored, RFC 9112
        # §6.3).  Any other coding: the body ends with the connection.
        if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
            return Head(status, headers, keep_alive, None, True)
        return Head(status, headers, False, None, False)
    length_text = headers.get("content-length")
    if length_text is None:
        return Head(status, headers, False, None, False)
    if not length_text.isdigit() or not length_text.isascii() or len(length_text) > 18:
        raise InvalidHead(f"bad Content-Length {_show(length_text)}")
    return Head(status, headers, keep_alive, int(length_text), False)


class Chunked:
    """Decodes a chunked body as its bytes arrive; ``done`` once the last chunk and the
    trailer section are in."""

    __slots__ = ("_left", "_state", "done")

    def __init__(self) -> None:
        self._state = 0  # 0: size line, 1: chunk data, 2: CRLF after data, 3: trailers
        self._left = 0
        self.done = False

    def feed(self, buf: bytearray, out: list[bytes]) -> int:
        """Decode what ``buf`` holds (consumed) into ``out``; the data bytes added."""
        added = 0
        while not self.done:
            if self._state == 1:
                if not buf:
                    break
                take = min(self._left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                added += take
                self._left -= take
                if self._left:
                    break
                self._state = 2
                continue
            eol = buf.find(b"\n")
            if eol < 0:
                if len(buf) > _MAX_CHUNK_LINE:
                    raise BrokenBody("chunk size line too long")
                break
            line = bytes(buf[:eol]).rstrip(b"\r")
            del buf[: eol + 1]
            if self._state == 0:
                size_text = line.split(b";", 1)[0].strip()
                if not 0 < len(size_text) <= 16 or size_text.strip(_HEX):
                    raise BrokenBody(f"bad chunk size {_show(size_text.decode('latin-1'))}")
                size = int(size_text, 16)
                self._left = size
                self._state = 1 if size else 3
            elif self._state == 2:
                if line:
                    raise BrokenBody("chunk data longer than its size")
                self._state = 0
            elif not line:  # trailers end with an empty line
                self.done = True
        return added


def decode_body(body: bytes, coding: str | None, max_body: int) -> bytes:
    """The body with a gzip or deflate content coding undone (at most ``max_body``
    bytes).  The client asks for no coding; this is for servers that send one anyway."""
    if coding is None:
        return body
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        return body  # unknown coding: the raw bytes, as a client without it would
    inflater = zlib.decompressobj(47 if coding != "deflate" else 15)  # 47: gzip or zlib
    try:
        data = inflater.decompress(body, max_body + 1)
    except zlib.error as exc:
        if coding == "deflate":  # some servers send raw deflate without the zlib header
            try:
                data = zlib.decompressobj(-15).decompress(body, max_body + 1)
            except zlib.error:
                raise BrokenBody(f"cannot decode {coding} content ({exc})") from None
        else:
            raise BrokenBody(f"cannot decode {coding} content ({exc})") from None
    if len(data) > max_body:
        raise AnswerTooLarge(None)
    return data


def _show(text: str) -> str:
    return repr(text[:40] + "…" if len(text) > 40 else text)
