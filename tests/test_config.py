"""projects.yml: the shipped files validate, and every kind of mistake is reported with the
file, line, column and field it concerns. Inline YAML is written to a file named
projects.yml in a temporary working directory, so messages read as an operator sees them."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.check_config import run
from bot.config import Config, Project, Threshold, parse_duration
from bot.config_loader import ConfigError, ConfigIssue, load_config, parse_config_text
from bot.settings import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SECRETS = {"EMAIL_BLAST_CONTROL_SECRET": "s1", "SOCIAL_MEDIA_CONTROL_SECRET": "s2"}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(text: str) -> Path:
    path = Path("projects.yml")
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(text), env or {})


def issues(text: str, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    return caught.value.issues


def where(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str]]:
    """(line, field) of each issue: the position is what these tests pin down."""
    return [(i.line, i.field) for i in issues(text, env)]


def report(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str, str]]:
    return [(i.line, i.field, i.message) for i in issues(text, env)]


def only(text: str, env: dict[str, str] | None = None) -> ConfigIssue:
    [issue] = issues(text, env)
    return issue


# -- the shipped files ---------------------------------------------------------------------


def test_demo_config_validates_without_any_environment() -> None:
    config = load_config(DEFAULT_CONFIG, {})
    assert config.demo_secrets is True
    assert config.project_names() == ["email-blast", "chatbot", "social-media"]
    assert config.project("chatbot").orchestrator == "support"
    assert config.project("email-blast").control_base == "http://127.0.0.1:9101"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yml")), ids=lambda p: p.name)
def test_examples_validate_with_their_secrets_set(path: Path) -> None:
    config = load_config(path, EXAMPLE_SECRETS)
    assert config.projects
    assert all(p.orchestrator for p in config.projects)


def test_production_example_shows_every_kind_and_a_command() -> None:
    config = load_config(ROOT / "examples" / "projects.production.yml", EXAMPLE_SECRETS)
    assert {p.kind for p in config.projects} == {"contract", "http", "prometheus"}
    assert config.project("billing").control_commands == {
        "restart": ["systemctl", "restart", "billing"]
    }
    assert config.demo_secrets is False


def test_production_example_names_each_unset_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "examples" / "projects.production.yml", {})
    assert [(i.field, i.line) for i in caught.value.issues] == [
        ("projects[email-blast].control_secret_env", 39),
        ("projects[social-media].control_secret_env", 49),
    ]


def test_a_validated_config_validates_again_from_its_dump() -> None:
    config = load_config(DEFAULT_CONFIG, {})
    again = Config.model_validate(config.model_dump())
    assert again.model_dump() == config.model_dump()


# -- durations, defaults, thresholds ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("5m", 300),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("1d", 86400),
        ("7", 7),
        (10, 10),
        (2.5, 2.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["-1s", "fast", 0, "0s", -3, True, float("inf"), "10 sec", ""])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_bad_duration_in_a_file_names_line_column_and_field() -> None:
    issue = only("""
        projects:
          - name: web
            url: http://127.0.0.1:8000
          - name: email-blast
            url: http://127.0.0.1:8101
            interval: fast
    """)
    expected = (
        "projects.yml:6:5: projects[email-blast].interval:"
        " expected a duration like 10s, 5m or 1h, got 'fast'"
    )
    assert str(issue) == expected


def test_defaults_are_filled_into_projects() -> None:
    config = load("""
        defaults: {interval: 30s, timeout: 250ms, failure_threshold: 5}
        projects:
          - {name: quiet, url: "http://127.0.0.1:1"}
          - {name: busy, url: "http://127.0.0.1:2", interval: 1m, failure_threshold: 2}
    """)
    quiet, busy = config.projects
    assert (quiet.interval, quiet.timeout, quiet.failure_threshold) == (30, 0.25, 5)
    assert (busy.interval, busy.timeout, busy.failure_threshold) == (60, 0.25, 2)
    assert busy.success_threshold == 2 and busy.recheck_interval == 1.0  # built-in defaults


def test_thresholds_merge_per_metric() -> None:
    config = load("""
        defaults:
          thresholds:
            error_rate: {warn: 0.1, crit: 0.3}
        projects:
          - name: p
            url: http://127.0.0.1:1
            thresholds:
              cpu_percent: 70
              queue_depth: {crit: 10, warn: 5}
    """)
    got = config.project("p").thresholds
    assert got["error_rate"] == Threshold(warn=0.1, crit=0.3)  # from defaults
    assert got["memory_percent"] == Threshold(warn=85, crit=95)  # built-in, kept
    assert got["cpu_percent"] == Threshold(warn=70)  # the scalar form means warn
    assert got["queue_depth"] == Threshold(warn=5, crit=10)
    assert config.defaults.thresholds["cpu_percent"] == Threshold(warn=80, crit=95)


def test_yaml_anchors_and_merge_keys_are_allowed() -> None:
    config = load("""
        projects:
          - &web {name: a, url: "http://127.0.0.1:1", kind: http, interval: 20s}
          - {<<: *web, name: b}
    """)
    assert [(p.name, p.kind, p.interval) for p in config.projects] == [
        ("a", "http", 20),
        ("b", "http", 20),
    ]


# -- the file itself -----------------------------------------------------------------------


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^nope\.yml: file not found$"):
        load_config(Path("nope.yml"), {})


def test_unreadable_file() -> None:
    Path("adir").mkdir()
    with pytest.raises(ConfigError, match=r"^adir: cannot read the file: Is a directory$"):
        load_config(Path("adir"), {})


def test_not_utf8() -> None:
    Path("projects.yml").write_bytes(b"projects:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"^projects\.yml:2:14: not UTF-8 text \(byte 0xe9\)$"):
        load_config(Path("projects.yml"), {})


def test_yaml_syntax_error_gives_the_parser_position() -> None:
    issue = only("""
        projects:
          - name: a
            url: http://127.0.0.1:1
           kind: http
    """)
    assert (issue.line, issue.column, issue.field) == (4, 4, "")
    assert issue.message.startswith("YAML: expected <block end>")
    assert issue.message.endswith("check the indentation")


def test_unknown_yaml_tags_are_refused() -> None:
    issue = only("projects: !!python/object/apply:os.system [true]\n")
    assert (issue.line, issue.column) == (1, 11)
    assert "could not determine a constructor" in issue.message


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("words\n", "a string"), ("# a comment\n", "an empty file")],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    issue = only(text)
    assert issue.message.endswith(f"got {got}")
    assert issue.line == (None if got == "an empty file" else 1)


def test_duplicate_yaml_keys_are_refused_at_the_second() -> None:
    issue = only("""
        projects:
          - name: a
            url: http://127.0.0.1:1
            interval: 5s
            timeout: 1s
            interval: 50s
    """)
    assert (issue.line, issue.column, issue.field) == (6, 5, "projects[a].interval")
    assert issue.message == "duplicate key 'interval' (first at line 4)"


# -- fields --------------------------------------------------------------------------------


def test_wrong_type() -> None:
    issue = only("""
        defaults:
          failure_threshold: many
    """)
    assert (issue.line, issue.column, issue.field) == (2, 3, "defaults.failure_threshold")
    assert issue.message.endswith("got 'many'")


def test_wrong_type_for_a_section() -> None:
    assert where("projects: {name: a}\n") == [(1, "projects")]
    assert only("defaults: 5\n").message == "expected a mapping, got 5"


def test_unknown_key_suggests_the_closest() -> None:
    issue = only("""
        projects:
          - name: a
            url: http://127.0.0.1:1
            intervall: 5s
    """)
    assert (issue.line, issue.field) == (4, "projects[a].intervall")
    assert issue.message == "unknown key (did you mean 'interval'?)"


def test_unknown_key_without_a_close_match_lists_the_allowed_ones() -> None:
    issue = only("""
        orchestrators:
          ops: {channel: "#ops", colour: red}
    """)
    assert (issue.line, issue.field) == (2, "orchestrators.ops.colour")
    assert issue.message == "unknown key; allowed: channel, approvers, oncall, projects, digest"
    assert only("project: []\n").message == "unknown key (did you mean 'projects'?)"


def test_missing_key_points_at_the_object() -> None:
    assert where("""
        projects:
          - name: a
            url: http://127.0.0.1:1
          - kind: http
    """) == [(4, "projects[1].name"), (4, "projects[1].url")]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8000", "http://", "file:///x"])
def test_url_must_be_http(url: str) -> None:
    issue = only(f"""
        projects:
          - name: a
            control_url: http://127.0.0.1:9
            url: "{url}"
    """)
    assert (issue.line, issue.field) == (4, "projects[a].url")
    assert issue.message == f"expected an http(s) URL with a host, got {url!r}"


def test_bad_names_and_slack_ids() -> None:
    assert where("""
        orchestrators:
          Team A: {channel: "#ops", approvers: [U012ABC, bob], oncall: S0OPS}
        projects:
          - {name: Web_1, url: "http://127.0.0.1:1"}
    """) == [
        (2, "orchestrators.Team A"),
        (2, "orchestrators.Team A.approvers[1]"),
        (4, "projects[Web_1].name"),
    ]


def test_needs_approval_must_be_allowed() -> None:
    issue = only(
        """
        projects:
          - name: a
            url: http://127.0.0.1:1
            control_secret_env: A_SECRET
            allowed_actions: [restart]
            needs_approval: [restart, pause]
    """,
        {"A_SECRET": "x"},
    )
    assert (issue.line, issue.field) == (6, "projects[a].needs_approval")
    assert "['pause']" in issue.message


def test_unknown_action() -> None:
    assert where("""
        projects:
          - name: a
            url: http://127.0.0.1:1
            kind: http
            allowed_actions: [restart, reboot]
            control_commands: {restart: [systemctl, restart, a]}
    """) == [(5, "projects[a].allowed_actions[1]")]


def test_control_commands_rules() -> None:
    got = report(
        """
        projects:
          - name: contract
            url: http://127.0.0.1:1
            control_secret_env: C
            control_commands: {restart: [x]}
          - name: shell
            url: http://127.0.0.1:2
            kind: http
            control_commands:
              restart: systemctl restart shell
          - name: missing
            url: http://127.0.0.1:3
            kind: prometheus
            allowed_actions: [restart]
    """,
        {"C": "x"},
    )
    assert got == [
        (
            5,
            "projects[contract].control_commands",
            "control_commands are for http/prometheus projects",
        ),
        (
            10,
            "projects[shell].control_commands.restart",
            "a command is an argv list like [systemctl, restart, x], got 'systemctl restart shell'",
        ),
        (
            11,
            "projects[missing].control_commands",
            "allowed actions without a command: ['restart']",
        ),
    ]


def test_contract_actions_need_a_secret_variable() -> None:
    issue = only("""
        projects:
          - name: a
            url: http://127.0.0.1:1
            allowed_actions: [restart]
    """)
    assert (issue.line, issue.field) == (4, "projects[a].allowed_actions")
    assert "control_secret_env" in issue.message


def test_bad_thresholds() -> None:
    got = report("""
        defaults:
          thresholds:
            error_rate: {warn: 0.5, crit: 0.1}
            latency: high
            empty: {}
            free_disk: {warn: 10, crit: 20, direction: below}
    """)
    assert got == [
        (
            3,
            "defaults.thresholds.error_rate",
            "crit 0.1 must be beyond warn 0.5 for direction above",
        ),
        (
            4,
            "defaults.thresholds.latency",
            "a threshold is a number (the warn level) or {warn, crit, direction}, got 'high'",
        ),
        (5, "defaults.thresholds.empty", "a threshold needs warn, crit or both"),
        (6, "defaults.thresholds.free_disk", "crit 20 must be beyond warn 10 for direction below"),
    ]


def test_timeout_longer_than_interval() -> None:
    got = report("""
        defaults: {interval: 10s, timeout: 20s}
        projects:
          - {name: own, url: "http://127.0.0.1:1", interval: 5s, timeout: 6s}
          - {name: inherits-timeout, url: "http://127.0.0.1:2", interval: 2s}
    """)
    assert got == [
        (1, "defaults.timeout", "timeout 20s is longer than interval 10s"),
        (3, "projects[own].timeout", "timeout 6s is longer than interval 5s"),
        (4, "projects[inherits-timeout].interval", "timeout 20s is longer than interval 2s"),
    ]


# -- references between objects --------------------------------------------------------------


def test_duplicate_project_name_points_at_the_second() -> None:
    issue = only("""
        projects:
          - name: web
            url: http://127.0.0.1:1
          - name: api
            url: http://127.0.0.1:2
          - name: web
            url: http://127.0.0.1:3
    """)
    # both are called "web", so the field is named by position
    assert (issue.line, issue.column, issue.field) == (6, 5, "projects[2].name")
    assert issue.message == "name 'web' is taken by projects[0]"


def test_unknown_references() -> None:
    got = report("""
        orchestrators:
          ops:
            channel: "#ops"
            projects: [web, wbe]
          other:
            channel: "#other"
            projects: [web]
        projects:
          - name: web
            url: http://127.0.0.1:1
            depends_on: [web, postgres, dbb]
          - name: db
            url: http://127.0.0.1:2
    """)
    assert got == [
        (4, "orchestrators.ops.projects[1]", "unknown project 'wbe' (did you mean 'web'?)"),
        (7, "orchestrators.other.projects[0]", "project 'web' is already in orchestrator 'ops'"),
        (11, "projects[web].depends_on[0]", "a project cannot depend on itself"),
        (11, "projects[web].depends_on[1]", "unknown project 'postgres'"),
        (11, "projects[web].depends_on[2]", "unknown project 'dbb' (did you mean 'db'?)"),
    ]


def test_a_depends_on_cycle_is_refused_once_where_it_closes() -> None:
    got = report("""
        projects:
          - {name: api, url: "http://127.0.0.1:1", depends_on: [db]}
          - {name: db, url: "http://127.0.0.1:2", depends_on: [disk]}
          - {name: disk, url: "http://127.0.0.1:3", depends_on: [api]}
          - {name: web, url: "http://127.0.0.1:4", depends_on: [api, web]}
          - {name: cache, url: "http://127.0.0.1:5", depends_on: [web, db]}
    """)
    assert got == [
        (4, "projects[disk].depends_on[0]", "depends_on forms a cycle: api -> db -> disk -> api"),
        (5, "projects[web].depends_on[1]", "a project cannot depend on itself"),
    ]


def test_orchestrator_is_assigned_from_the_orchestrators_section() -> None:
    assert where("""
        projects:
          - {name: a, url: "http://127.0.0.1:1", orchestrator: ops}
    """) == [(2, "projects[a].orchestrator")]


# -- secrets and demo_secrets ------------------------------------------------------------------

CONTRACT = """\
    projects:
      - name: mailer
        url: {url}
        control_secret_env: MAILER_SECRET
        allowed_actions: [restart]
"""


@pytest.mark.parametrize("env", [{}, {"MAILER_SECRET": ""}])
def test_unset_secret_variable(env: dict[str, str]) -> None:
    issue = only(CONTRACT.format(url="http://10.0.0.5:80"), env)
    assert str(issue) == (
        "projects.yml:4:5: projects[mailer].control_secret_env:"
        " environment variable MAILER_SECRET (the /control secret) is not set"
    )


def test_set_secret_variable() -> None:
    load(CONTRACT.format(url="http://10.0.0.5:80"), {"MAILER_SECRET": "s"})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8101", "http://127.9.9.9", "http://localhost:80", "http://[::1]:80"]
)
def test_demo_secrets_on_loopback_need_no_variable(url: str) -> None:
    load("demo_secrets: true\n" + textwrap.dedent(CONTRACT).format(url=url))


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5", "https://mailer.example.com", "http://192.168.1.5"]
)
def test_demo_secrets_refuse_other_hosts(url: str) -> None:
    issue = only("demo_secrets: true\n" + textwrap.dedent(CONTRACT).format(url=url))
    assert (issue.line, issue.field) == (4, "projects[mailer].url")
    assert issue.message.startswith("demo_secrets: true allows only loopback URLs")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[fd00:ec2::254]", "cloud metadata"),
        ("http://0.0.0.0:8080", "unspecified"),
    ],
)
def test_metadata_and_link_local_urls_are_refused(url: str, why: str) -> None:
    issue = only(textwrap.dedent(CONTRACT).format(url=url), {"MAILER_SECRET": "s"})
    assert (issue.line, issue.field) == (3, "projects[mailer].url")
    assert why in issue.message and "never connects there" in issue.message


def test_private_network_is_filled_from_defaults() -> None:
    text = "defaults: {private_network: true}\n" + textwrap.dedent(CONTRACT).format(
        url="http://mailer.internal:80"
    )
    config = load(text, {"MAILER_SECRET": "s"})
    assert config.project("mailer").private_network is True
    assert load(textwrap.dedent(CONTRACT).format(url="http://m.internal"), {"MAILER_SECRET": "s"}
                ).project("mailer").private_network is False  # fmt: skip


def test_demo_secrets_must_be_a_real_boolean() -> None:
    assert where('demo_secrets: "yes"\n') == [(1, "demo_secrets")]


# -- one pass reports everything; the model alone enforces the rules too ----------------------


def test_all_problems_are_reported_at_once_in_file_order() -> None:
    assert where("""
        projects:
          - name: a
            url: http://127.0.0.1:1
            control_secret_env: A_SECRET
            depends_on: [nothing]
            interval: soon
    """) == [
        (4, "projects[a].control_secret_env"),
        (5, "projects[a].depends_on[0]"),
        (6, "projects[a].interval"),
    ]


def test_config_built_in_code_checks_references_with_locations() -> None:
    with pytest.raises(ValidationError) as caught:
        Config(
            projects=[
                Project(name="a", url="http://127.0.0.1:1"),
                Project(name="a", url="http://127.0.0.1:2", depends_on=["b"]),
            ]
        )
    assert [e["loc"] for e in caught.value.errors()] == [
        ("projects", 1, "name"),
        ("projects", 1, "depends_on", 0),
    ]


def test_parse_config_text_uses_the_given_filename() -> None:
    with pytest.raises(ConfigError, match=r"^etc/orch\.yml:1:1: foo: unknown key"):
        parse_config_text("foo: 1\n", "etc/orch.yml", {})


# -- orch check-config -------------------------------------------------------------------------


def test_check_config_ok() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(DEFAULT_CONFIG, {}, out, err) == 0
    assert out.getvalue() == f"ok: 3 projects in 2 orchestrators ({DEFAULT_CONFIG})\n"
    assert err.getvalue() == ""


def test_check_config_counts_projects_outside_orchestrators() -> None:
    write("""
        projects:
          - {name: solo, url: "http://127.0.0.1:1", kind: http}
    """)
    out = io.StringIO()
    assert run(Path("projects.yml"), {}, out, io.StringIO()) == 0
    assert out.getvalue() == "ok: 1 project in 0 orchestrators, 1 in none (projects.yml)\n"


def test_check_config_bad_file() -> None:
    write("""
        projects:
          - name: a
            url: ftp://x
    """)
    out, err = io.StringIO(), io.StringIO()
    assert run(Path("projects.yml"), {}, out, err) == 2
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "projects.yml:3:5: projects[a].url: expected an http(s) URL with a host, got 'ftp://x'\n"
        "1 problem in projects.yml\n"
    )


def test_check_config_default_path_comes_from_orch_config() -> None:
    write("projects: []\n")
    out = io.StringIO()
    assert run(None, {"ORCH_CONFIG": "projects.yml"}, out, io.StringIO()) == 0
    assert out.getvalue() == "ok: 0 projects in 0 orchestrators (projects.yml)\n"


@pytest.mark.parametrize(
    "content", [b"\x00\x01\x02", b"{{{{", b"[" * 5000, b"a: &a [*a]\nprojects: *a\n", b"- x"]
)
def test_check_config_never_raises_on_garbage(content: bytes) -> None:
    Path("projects.yml").write_bytes(content)
    err = io.StringIO()
    assert run(Path("projects.yml"), {}, io.StringIO(), err) == 2
    assert err.getvalue().startswith("projects.yml")


# -- no input ends in a traceback --------------------------------------------------------------

YAMLISH = st.text(alphabet=":-[]{}&*!|>?'\"#,~ \n\tabnoy01.5sm<", max_size=120)
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=8)
FIELDS = [*sorted(Project.model_fields), "bogus"]
PROJECTS = st.lists(st.dictionaries(st.sampled_from(FIELDS), SCALARS | st.lists(SCALARS)))
NO_FIXTURE_CHECK = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@NO_FIXTURE_CHECK
@given(YAMLISH)
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config_text(text, "p.yml", {})
    except ConfigError as exc:
        assert exc.issues and all(str(i).startswith("p.yml") for i in exc.issues)


@NO_FIXTURE_CHECK
@given(PROJECTS)
def test_every_issue_in_a_mapping_has_a_line(projects: list[dict[str, object]]) -> None:
    text = yaml.safe_dump({"projects": projects})
    try:
        parse_config_text(text, "p.yml", {})
    except ConfigError as exc:
        assert all(i.line is not None and i.field for i in exc.issues)
