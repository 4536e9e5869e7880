"""The shape of ``projects.yml`` (DESIGN §7), validated with pydantic.

This module only describes and validates; ``bot.config_loader`` reads the YAML, checks the
environment for secrets and turns validation errors into messages with file and line.
After validation every project carries concrete values: anything it leaves out is filled
from ``defaults``, so agents never look at ``defaults`` themselves.

Every error carries a ``loc`` naming the offending field: rules between two fields of one
object are field validators (they see the fields declared before them in ``info.data``);
rules spanning objects (``bot.config_rules``) run on ``Config``'s raw input, so one pass
reports every problem, each at its own place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agents.address_guard import literal_refusal
from bot.config_api import ApiUsers
from bot.config_digest import DigestConfig
from bot.config_policy import Remediation, merged
from bot.config_rules import cross_problems, reraisable
from bot.config_values import (  # noqa: F401  (re-exported: the public config API)
    NAME_PATTERN,
    is_loopback_url,
    parse_duration,
    suggest,
)

Action = Literal["restart", "pause", "resume", "clear_cache"]
ACTIONS: tuple[Action, ...] = ("restart", "pause", "resume", "clear_cache")
Kind = Literal["contract", "http", "prometheus"]


def _check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"a name is lowercase letters, digits and '-' (at most 63, not starting with '-'),"
            f" got {value!r}"
        )
    return value


def _slack_id(value: str) -> str:
    if not re.fullmatch(r"[USW][A-Z0-9]{2,20}", value):
        raise ValueError(f"expected a Slack user (U…, W…) or user-group (S…) id, got {value!r}")
    return value


def _argv(value: Any) -> Any:
    # A string here would tempt someone to hand it to a shell; say so instead of "not a list".
    if isinstance(value, str):
        raise ValueError(f"a command is an argv list like [systemctl, restart, x], got {value!r}")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, AfterValidator(_check_name)]
SlackId = Annotated[str, AfterValidator(_slack_id)]
Argv = Annotated[
    list[Annotated[str, Field(min_length=1)]], Field(min_length=1), BeforeValidator(_argv)
]


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
        if not isinstance(value, dict | Threshold):
            raise ValueError(
                f"a threshold is a number (the warn level) or {{warn, crit, direction}},"
                f" got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn is None and self.crit is None:
            raise ValueError("a threshold needs warn, crit or both")
        if self.warn is not None and self.crit is not None:
            wrong = self.crit < self.warn if self.direction == "above" else self.crit > self.warn
            if wrong:
                raise ValueError(
                    f"crit {self.crit:g} must be beyond warn {self.warn:g}"
                    f" for direction {self.direction}"
                )
        return self


DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "error_rate": Threshold(warn=0.05, crit=0.20),
    "memory_percent": Threshold(warn=85, crit=95),
    "cpu_percent": Threshold(warn=80, crit=95),
}


class HttpCheck(_Strict):
    """For ``kind: http``: what a healthy answer looks like."""

    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200]
    )
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
    # /metrics and /status of contract projects, fetched with every probe that is at
    # least this long after the last fetch: /health alone decides up or down, so this
    # costs no detection time and cuts a 10 s fleet's requests by 45 % (DESIGN §9).
    scrape_interval: Duration = 30.0
    # Host names resolving to private or loopback addresses are refused unless this is
    # true (agents.address_guard); addresses written out in a URL are always the
    # operator's choice.
    private_network: bool = False
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(2, ge=1, le=100)
    # metric hysteresis: samples over a level to raise it, under it to lower it
    anomaly_open_after: int = Field(3, ge=1, le=100)
    anomaly_close_after: int = Field(2, ge=1, le=100)
    # flapping (Nagios): weighted share of state changes over the last `flap_window` probes
    flap_window: int = Field(21, ge=3, le=200)
    flap_start: float = Field(0.20, gt=0, le=1)
    flap_stop: float = Field(0.05, ge=0, lt=1)
    # Merged over DEFAULT_THRESHOLDS per metric, so naming one metric here cannot silently
    # switch off the built-in memory or CPU levels.
    thresholds: dict[str, Threshold] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    remediation: Remediation = Field(default_factory=Remediation)
    # Fleet-wide (DESIGN §6): remediations running at once, and the share of projects down
    # at once from which orch suspects its own network and restarts nothing.
    max_concurrent_remediations: int = Field(2, ge=1, le=100)
    mass_failure_ratio: float = Field(0.5, gt=0, le=1)
    # Shared dependencies (agents.dependencies): how long a project with depends_on waits,
    # once down, for a dependency's outage to explain it (no card, no restart meanwhile),
    # and how long its outage stays folded after the dependency recovered.  Alertmanager's
    # group_wait default; it covers a dependency detected an interval plus rechecks later.
    dependency_grace: Duration = 30.0
    # Claude's budgets (input + output tokens): fleet-wide per UTC day, and per incident.
    # When spent, the rule engine explains instead.
    analysis_daily_tokens: int = Field(500_000, ge=0)
    analysis_incident_tokens: int = Field(50_000, ge=0)
    # Claude requests in any 60 s, fleet-wide per process: in an alert storm hundreds of
    # incidents escalate at once; beyond the cap the rule engine explains them.
    analysis_calls_per_minute: int = Field(10, ge=0)
    # Hosts whose links an analysis may show (a runbook wiki, say); others are removed.
    analysis_link_hosts: list[str] = Field(default_factory=list)

    @field_validator("timeout")
    @classmethod
    def _timeout_fits(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and value > interval:
            raise ValueError(f"timeout {value:g}s is longer than interval {interval:g}s")
        return value

    @field_validator("flap_stop")
    @classmethod
    def _hysteresis(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("flap_start")
        if start is not None and value >= start:
            raise ValueError(f"flap_stop {value:g} must be lower than flap_start {start:g}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _over_builtin(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        return {**DEFAULT_THRESHOLDS, **value}


class Orchestrator(_Strict):
    """A group: its own channel, approvers (Slack user or user-group ids) and projects."""

    channel: str
    approvers: list[SlackId] = Field(default_factory=list)
    oncall: SlackId | None = None  # a Slack user-group id mentioned on escalations
    projects: list[str] = Field(default_factory=list)
    digest: DigestConfig = Field(default_factory=DigestConfig)  # bot.config_digest

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not re.fullmatch(r"[#A-Za-z0-9][\w.-]{0,79}", value):
            raise ValueError(f"expected a channel like #ops-outreach or an id, got {value!r}")
        return value


class Project(_Strict):
    name: Name
    url: str
    kind: Kind = "contract"
    # Where /control lives when it is not `url` (a supervisor port that survives a crash).
    control_url: str | None = None
    control_secret_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    allowed_actions: list[Action] = Field(default_factory=list)
    needs_approval: list[Action] = Field(default_factory=list)
    # argv per action for projects that do not speak the contract (never a shell string);
    # validated even when absent so an http project allowing `restart` must say how.
    control_commands: dict[Action, Argv] = Field(default_factory=dict, validate_default=True)
    depends_on: list[str] = Field(default_factory=list)
    http: HttpCheck | None = None
    # Filled from `defaults` when left out (see Config._fill_defaults).
    interval: Duration | None = None
    timeout: Duration | None = None
    recheck_interval: Duration | None = None
    scrape_interval: Duration | None = None
    private_network: bool | None = None
    failure_threshold: int | None = Field(None, ge=1, le=100)
    success_threshold: int | None = Field(None, ge=1, le=100)
    anomaly_open_after: int | None = Field(None, ge=1, le=100)
    anomaly_close_after: int | None = Field(None, ge=1, le=100)
    flap_window: int | None = Field(None, ge=3, le=200)
    flap_start: float | None = Field(None, gt=0, le=1)
    flap_stop: float | None = Field(None, ge=0, lt=1)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    # Only the fields given here replace `defaults.remediation`'s (Config._fill_defaults).
    remediation: Remediation | None = None
    # Set from the orchestrators section (accepted in input only when it agrees, so that a
    # dumped Config validates again).
    orchestrator: str | None = None

    # The validators below read earlier fields from info.data; a field that failed its
    # own validation is absent there, and then the cross-field rule stays quiet.
    @field_validator("url", "control_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host, got {value!r}")
        refused = literal_refusal(value)
        if refused:
            raise ValueError(refused)
        return value.rstrip("/")

    @field_validator("control_secret_env")
    @classmethod
    def _secret_for_contract(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("kind") not in (None, "contract"):
            raise ValueError("control_secret_env is only for kind: contract")
        return value

    @field_validator("allowed_actions")
    @classmethod
    def _contract_needs_secret(cls, value: list[Action], info: ValidationInfo) -> list[Action]:
        secretless = "control_secret_env" in info.data and not info.data["control_secret_env"]
        if value and info.data.get("kind") == "contract" and secretless:
            raise ValueError("a contract project needs control_secret_env to run any action")
        return value

    @field_validator("needs_approval")
    @classmethod
    def _subset(cls, value: list[Action], info: ValidationInfo) -> list[Action]:
        allowed = info.data.get("allowed_actions")
        extra = sorted(set(value) - set(allowed)) if allowed is not None else []
        if extra:
            raise ValueError(f"needs_approval lists actions not in allowed_actions: {extra}")
        return value

    @field_validator("control_commands")
    @classmethod
    def _commands(cls, value: dict[Action, list[str]], info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if kind == "contract" and value:
            raise ValueError("control_commands are for http/prometheus projects")
        missing = [a for a in info.data.get("allowed_actions") or () if a not in value]
        if kind in ("http", "prometheus") and missing:
            raise ValueError(f"allowed actions without a command: {missing}")
        return value

    @field_validator("http")
    @classmethod
    def _http_kind(cls, value: HttpCheck | None, info: ValidationInfo) -> HttpCheck | None:
        if value is not None and info.data.get("kind") not in (None, "http"):
            raise ValueError("an http: check section needs kind: http")
        return value

    # Concrete accessors for code that runs after validation.
    @property
    def control_base(self) -> str:
        return self.control_url or self.url

    @property
    def policy(self) -> Remediation:
        # Always set once the Config validated (_fill_defaults).
        return self.remediation or Remediation()


_FILLED = (
    "interval", "timeout", "recheck_interval", "scrape_interval", "private_network",
    "failure_threshold", "success_threshold", "anomaly_open_after", "anomaly_close_after",
    "flap_window", "flap_start", "flap_stop",
)  # fmt: skip


_BUILTIN = {k: Defaults.model_fields[k].default for k in ("timeout", "interval")}


class Config(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    orchestrators: dict[Name, Orchestrator] = Field(default_factory=dict)
    projects: list[Project] = Field(default_factory=list)
    # Demo-only: projects whose secret variable is unset get a fixed, publicly known demo
    # secret. Refused unless every project URL is on loopback; never use in production.
    # Strict so that a quoted "yes" cannot switch it on past the loopback check.
    demo_secrets: StrictBool = False
    api_users: ApiUsers = Field(default_factory=dict)  # HTTP API user -> Slack user id
    _by_name: dict[str, Project] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        # Rules spanning objects run on the raw input before field validation, so a file
        # with a bad interval and an unknown depends_on reports both in one pass.
        problems = cross_problems(data, _BUILTIN)
        try:
            config = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            errors = [reraisable(e) for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors + problems) from None
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        config._fill_defaults()
        return config

    def _fill_defaults(self) -> None:
        for project in self.projects:
            for field_name in _FILLED:
                if getattr(project, field_name) is None:
                    setattr(project, field_name, getattr(self.defaults, field_name))
            project.thresholds = {**self.defaults.thresholds, **project.thresholds}
            project.remediation = merged(self.defaults.remediation, project.remediation)
        self._by_name = {p.name: p for p in self.projects}
        for group_name, group in self.orchestrators.items():
            for member in group.projects:
                self._by_name[member].orchestrator = group_name

    def project(self, name: str) -> Project:
        # A dict, not a scan: the runtime looks a project up on every probe.
        return self._by_name[name]

    def project_index(self) -> Mapping[str, Project]:
        """Every project by name.  For the per-probe path, which keeps it per config:
        reaching a pydantic private attribute costs several microseconds each time."""
        return self._by_name

    def project_names(self) -> list[str]:
        return [p.name for p in self.projects]
