"""An orchestrator group's daily digest in ``projects.yml`` (``bot.digest_job`` posts it).

```yaml
orchestrators:
  outreach:
    channel: "#ops-outreach"
    digest: {time: "08:30", timezone: Europe/Berlin}   # default 09:00 UTC, enabled
```

``time`` is the group's local wall-clock time (``HH:MM``).  Quote it: YAML 1.1 reads an
unquoted ``9:30`` as the sexagesimal number 570, which is accepted and read back as 09:30;
``timezone`` is an IANA name (``Europe/Berlin``, ``America/New_York``, ``UTC``).
``minutes_saved_per_fix`` is the digest's estimate of a person's time one verified
automatic fix saves (docs/operations.md, "Digest: the maths").
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def _sexagesimal(value: Any) -> Any:
    # YAML 1.1: 9:30 -> 570 (9 * 60 + 30).  Minutes of the day, back to HH:MM.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


class DigestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: Annotated[str, BeforeValidator(_sexagesimal)] = "09:00"
    timezone: str = "UTC"
    enabled: StrictBool = True
    minutes_saved_per_fix: float = Field(15.0, ge=0, le=24 * 60)

    @field_validator("time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        match = _HHMM.fullmatch(value.strip())
        if match is None:
            raise ValueError(f'expected a time of day like "09:00", got {value!r}')
        return f"{int(match[1]):02d}:{match[2]}"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name like Europe/Berlin or UTC)"
            ) from None
        return value

    @property
    def at(self) -> dt.time:
        hours, minutes = self.time.split(":")
        return dt.time(int(hours), int(minutes))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
