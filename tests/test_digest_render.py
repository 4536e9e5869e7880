"""The digest card within Block Kit limits (1, 60 and 600 projects) and its chart a valid
PNG of sensible size; matplotlib stays out of orch's start-up."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from agents.events import INCIDENT_OPENED, Event
from bot.blockkit import MESSAGE_BLOCKS, check_message
from bot.digest import build_digest
from bot.digest_chart import MAX_ROWS, render_digest_chart
from bot.render import render_blocks
from storage.base import Incident, ProbeRecord
from storage.sqlite import SQLiteStore
from tests.digest_samples import NOW, digest

pytestmark = pytest.mark.timeout(60)
ZONE = ZoneInfo("Europe/Berlin")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG whose every chunk's CRC is right and that ends in IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(io.BytesIO(data)) as image:  # a real decoder agrees
        image.verify()
    return width, height


def texts(payload: dict) -> str:  # type: ignore[type-arg]
    return "\n".join(b["text"]["text"] for b in payload["blocks"] if b.get("type") == "section")


@pytest.mark.parametrize(("n", "attention"), [(1, 0), (1, 1), (60, 0), (60, 20), (60, 60)])
def test_card_within_block_kit_limits_and_every_project_listed(n: int, attention: int) -> None:
    d = digest(n, attention)
    payload = render_blocks("digest.json.j2", digest=d)
    assert check_message(payload) == [] and len(payload["blocks"]) <= MESSAGE_BLOCKS
    body = texts(payload)
    assert all(p.name in body for p in d.projects)  # summarised, never dropped
    detailed = [b for b in payload["blocks"] if "MTTA" in b.get("text", {}).get("text", "")]
    assert len(detailed) == min(attention, 12)
    if attention == 0:
        assert "All clear" in body
    else:
        assert f"{attention} project" in body and "need" in body


def test_a_huge_group_is_cut_with_a_count() -> None:
    payload = render_blocks("digest.json.j2", digest=digest(600, 30))
    assert check_message(payload) == [] and len(payload["blocks"]) <= MESSAGE_BLOCKS
    footer = payload["blocks"][-1]["elements"][0]["text"]
    assert footer.startswith("and 138 more")  # 600 - 12 in detail - 450 listed


@pytest.mark.parametrize(("n", "attention"), [(1, 1), (60, 20)])
def test_chart_is_a_valid_png_of_sensible_size(n: int, attention: int) -> None:
    data = render_digest_chart(digest(n, attention), ZONE)
    width, height = png_size(data)
    rows = min(n, MAX_ROWS)
    assert width == 1000 and height == round(100 * (1.4 + 0.32 * rows))
    assert 5_000 < len(data) < 400_000


async def test_sixty_real_projects_render() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        names = [f"svc-{i:02d}" for i in range(60)]
        await store.add_probes([
            ProbeRecord(name, NOW - timedelta(minutes=m), "fail" if i % 7 == 0 else "pass", 5.0)
            for i, name in enumerate(names) for m in range(0, 60, 1)
        ])  # fmt: skip
        for name in names[::10]:
            row = Incident(f"i-{name}", f"{name}:down", name, "down", "critical", "down",
                           NOW - timedelta(hours=3))  # fmt: skip
            await store.open_incident(row, _event)
        d = await build_digest(store, "outreach", "#ops", names, NOW)
        assert len(d.attention) == 9 + 6 - 1  # failing every 7th (9) and with incidents (6)
        payload = render_blocks("digest.json.j2", digest=d)
        assert check_message(payload) == [] and len(payload["blocks"]) <= MESSAGE_BLOCKS
        png_size(render_digest_chart(d, ZONE))
    finally:
        await store.close()


def _event(row: Incident) -> Event:
    return Event(INCIDENT_OPENED, row.opened_at, "test", {}, row.project, row.id)


@pytest.mark.parametrize("heavy", ["matplotlib", "anthropic"])
def test_heavy_libraries_are_not_imported_at_start_up(heavy: str) -> None:
    # matplotlib only when a chart is drawn; Anthropic's SDK (~70 MB) only with a key.
    code = f"import sys, bot.runtime, bot.cli; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
