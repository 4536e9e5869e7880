"""The shape of ``projects.yml`` (DESIGN §7), validated with pydantic.

This module only describes and validates; ``bot.config_loader`` reads the YAML, checks the
environment for secrets and turns validation errors into messages with file and line.
After validation every project carries concrete values: anything it leaves out is filled
from ``defaults``, so agents never look at ``defaults`` themselves.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Action = Literal["restart", "pause", "resume", "clear_cache"]
ACTIONS: tuple[Action, ...] = ("restart", "pause", "resume", "clear_cache")
Kind = Literal["contract", "http", "prometheus"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def parse_duration(value: Any) -> float:
    """``10s``, ``5m``, ``1.5h``, ``250ms`` or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 10s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like 10s, 5m or 1h, got {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Threshold(_Strict):
    """Levels for one metric. A bare number in YAML means ``{warn: number}``."""

    warn: float | None = None
    crit: float | None = None
    direction: Literal["above", "below"] = "above"

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"warn": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn is None and self.crit is None:
            raise ValueError("a threshold needs warn, crit or both")
        if self.warn is not None and self.crit is not None:
            wrong = self.crit < self.warn if self.direction == "above" else self.crit > self.warn
            if wrong:
                raise ValueError(f"crit must be beyond warn for direction {self.direction}")
        return self


DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "error_rate": Threshold(warn=0.05, crit=0.20),
    "memory_percent": Threshold(warn=85, crit=95),
    "cpu_percent": Threshold(warn=80, crit=95),
}


class HttpCheck(_Strict):
    """For ``kind: http``: what a healthy answer looks like."""

    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_contains: str | None = None
    json_path: str | None = None  # dotted path into a JSON body, e.g. "status.db"
    json_equals: Any = None

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _path_and_value(self) -> HttpCheck:
        if (self.json_path is None) != (self.json_equals is None):
            raise ValueError("json_path and json_equals go together")
        return self


class Defaults(_Strict):
    interval: Duration = 10.0
    timeout: Duration = 5.0
    recheck_interval: Duration = 1.0  # between confirming probes after a failure
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    # metric hysteresis: samples over a level to raise it, under it to lower it
    anomaly_open_after: int = Field(3, ge=1, le=100)
    anomaly_close_after: int = Field(2, ge=1, le=100)
    # flapping (Nagios): weighted share of state changes over the last `flap_window` probes
    flap_window: int = Field(21, ge=3, le=200)
    flap_start: float = Field(0.20, gt=0, le=1)
    flap_stop: float = Field(0.05, ge=0, lt=1)
    thresholds: dict[str, Threshold] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @model_validator(mode="after")
    def _sane(self) -> Defaults:
        if self.timeout > self.interval:
            raise ValueError("timeout must not be longer than interval")
        if self.flap_stop >= self.flap_start:
            raise ValueError("flap_stop must be lower than flap_start")
        return self


class Orchestrator(_Strict):
    """A group: its own channel, approvers (Slack user or user-group ids) and projects."""

    channel: str = Field(pattern=r"^[#A-Za-z0-9][\w.-]{0,79}$")
    approvers: list[str] = Field(default_factory=list)
    oncall: str | None = None  # a Slack user-group id mentioned on escalations
    projects: list[str] = Field(default_factory=list)

    @field_validator("approvers")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"[US][A-Z0-9]{2,20}", item):
                raise ValueError(f"{item!r} is not a Slack user (U…) or user-group (S…) id")
        return value


class Project(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    url: str
    kind: Kind = "contract"
    # Where /control lives when it is not `url` (a supervisor port that survives a crash).
    control_url: str | None = None
    control_secret_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    allowed_actions: list[Action] = Field(default_factory=list)
    needs_approval: list[Action] = Field(default_factory=list)
    # argv per action for projects that do not speak the contract (never a shell string)
    control_commands: dict[Action, list[str]] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    http: HttpCheck | None = None
    # Filled from `defaults` when left out (see Config._fill_defaults).
    interval: Duration | None = None
    timeout: Duration | None = None
    recheck_interval: Duration | None = None
    failure_threshold: int | None = Field(None, ge=1, le=100)
    success_threshold: int | None = Field(None, ge=1, le=100)
    anomaly_open_after: int | None = Field(None, ge=1, le=100)
    anomaly_close_after: int | None = Field(None, ge=1, le=100)
    flap_window: int | None = Field(None, ge=3, le=200)
    flap_start: float | None = Field(None, gt=0, le=1)
    flap_stop: float | None = Field(None, ge=0, lt=1)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    orchestrator: str | None = None  # set from the orchestrators section

    @field_validator("url", "control_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Project:
        extra = sorted(set(self.needs_approval) - set(self.allowed_actions))
        if extra:
            raise ValueError(f"needs_approval lists actions not in allowed_actions: {extra}")
        if self.kind == "contract" and self.control_commands:
            raise ValueError("control_commands are for http/prometheus projects")
        if self.kind != "contract" and self.control_secret_env:
            raise ValueError("control_secret_env is only for kind: contract")
        if self.kind != "http" and self.http is not None:
            raise ValueError("an http: check section needs kind: http")
        for action, argv in self.control_commands.items():
            if not argv or not all(isinstance(a, str) and a for a in argv):
                raise ValueError(f"control_commands.{action} must be a non-empty argv list")
        return self

    # Concrete accessors for code that runs after validation.
    @property
    def control_base(self) -> str:
        return self.control_url or self.url


class Config(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    orchestrators: dict[str, Orchestrator] = Field(default_factory=dict)
    projects: list[Project] = Field(default_factory=list)
    # Demo-only: projects whose secret variable is unset get a fixed, publicly known demo
    # secret. Refused unless every project URL is on loopback; never use in production.
    demo_secrets: bool = False

    @model_validator(mode="after")
    def _fill_defaults(self) -> Config:
        names = [p.name for p in self.projects]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate project names: {dupes}")
        known = set(names)
        for project in self.projects:
            for field_name in (
                "interval", "timeout", "recheck_interval", "failure_threshold",
                "success_threshold", "anomaly_open_after", "anomaly_close_after",
                "flap_window", "flap_start", "flap_stop",
            ):  # fmt: skip
                if getattr(project, field_name) is None:
                    setattr(project, field_name, getattr(self.defaults, field_name))
            project.thresholds = {**self.defaults.thresholds, **project.thresholds}
            assert project.timeout is not None and project.interval is not None
            if project.timeout > project.interval:
                raise ValueError(f"project {project.name}: timeout longer than interval")
            missing = [d for d in project.depends_on if d not in known]
            if missing:
                raise ValueError(f"project {project.name}: depends_on unknown {missing}")
        for group_name, group in self.orchestrators.items():
            for member in group.projects:
                if member not in known:
                    raise ValueError(f"orchestrator {group_name}: unknown project {member!r}")
                owner = self.project(member)
                if owner.orchestrator not in (None, group_name):
                    raise ValueError(
                        f"project {member!r} is in two orchestrators: "
                        f"{owner.orchestrator} and {group_name}"
                    )
                owner.orchestrator = group_name
        return self

    def project(self, name: str) -> Project:
        for project in self.projects:
            if project.name == name:
                return project
        raise KeyError(name)

    def project_names(self) -> list[str]:
        return [p.name for p in self.projects]
