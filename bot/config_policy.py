"""The remediation policy of ``projects.yml`` (DESIGN §6): what orch fixes by itself, how
often, and how long it waits for a project to answer and recover.

``defaults.remediation`` sets it for the fleet; a project's ``remediation`` block changes
only the fields it names (``Config`` merges the two).  Every default is DESIGN §6's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from bot.config_values import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _zero_or_duration(value: object) -> float:
    # "no backoff" is a legitimate policy (tests, a project that restarts in a second).
    return 0.0 if value in (0, "0", "0s") else parse_duration(value)


Wait = Annotated[float, BeforeValidator(_zero_or_duration)]
FixAction = Literal["restart", "pause", "resume", "clear_cache"]


class Remediation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Master switch: off = orch only watches and asks humans.
    auto_fix: bool = True
    on_down: FixAction | None = "restart"
    # A memory anomaly (memory_percent or memory_mb over its level).
    on_memory: FixAction | None = "clear_cache"
    attempts_per_incident: int = Field(2, ge=0, le=10)
    # Restarts per window per project, counted across replicas, orch restarts and
    # operators' restarts alike.
    restart_budget: int = Field(3, ge=0, le=100)
    budget_window: Duration = Field(900.0, gt=0)
    backoff: Wait = Field(10.0, ge=0)  # before the second attempt, doubling
    backoff_max: Wait = Field(300.0, ge=0)
    backoff_reset: Duration = Field(600.0, gt=0)  # healthy this long: the doubling restarts
    control_timeout: Duration = Field(10.0, gt=0)  # one /control call or command
    verify_timeout: Duration = Field(60.0, gt=0)  # to be healthy again after an action
    verify_interval: Duration = Field(2.0, gt=0)
    approval_ttl: Duration = Field(1800.0, gt=0)
    four_eyes: bool = False  # the requester may not approve their own request

    @field_validator("backoff_max")
    @classmethod
    def _cap(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("backoff")
        if first is not None and value < first:
            raise ValueError(f"backoff_max {value:g}s is shorter than backoff {first:g}s")
        return value


def merged(base: Remediation, override: Remediation | None) -> Remediation:
    """``base`` with the fields ``override`` was given explicitly."""
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})
