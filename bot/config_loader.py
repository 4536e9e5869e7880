"""Read ``projects.yml`` into a ``Config``, or fail with every problem at file:line:column.

The YAML is composed into nodes first, because nodes carry marks (positions) and plain
data does not; the same nodes are then constructed into data for pydantic, and each
pydantic error ``loc`` is walked back through the node tree to the key or item it names.
Secrets are the one check that needs the environment, so it happens here, not in the model.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from bot.config import Config, suggest

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None  # 1-based; None when the problem has no place in the text
    column: int | None
    field: str  # e.g. "projects[email-blast].interval"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.column) if p is not None)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(Exception):
    """Every problem found in one configuration file, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.column or 0))
        super().__init__("\n".join(map(str, self.issues)))

    def __str__(self) -> str:
        return "\n".join(map(str, self.issues))


def load_config(path: Path, env: Mapping[str, str], *, require_secrets: bool = True) -> Config:
    """Read and validate ``path``.  ``require_secrets=False`` skips only the check that
    every /control secret variable is set, for commands that never call /control (an
    operator's ``orch approve``: the running orch, which has them, does the work)."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(name, None, None, "", "file not found")]) from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue(name, None, None, "", message)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")  # the first bad byte: all before it decodes
        line, column = _position(before, len(before))
        message = f"not UTF-8 text (byte {raw[exc.start]:#04x})"
        raise ConfigError([ConfigIssue(name, line, column, "", message)]) from None
    return parse_config_text(text, name, env, require_secrets=require_secrets)


def parse_config_text(
    text: str, filename: str, env: Mapping[str, str], *, require_secrets: bool = True
) -> Config:
    root, data, issues = _compose(text, filename)
    if not isinstance(data, dict):
        got = "an empty file" if root is None else f"a {_yaml_type(data)}"
        message = f"expected a mapping with projects, orchestrators and defaults; got {got}"
        raise ConfigError([*issues, _issue(filename, root, "", message)])
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            node = _locate(root, loc)
            issues.append(_issue(filename, node, _label(loc, data), _message(error)))
    for loc, message in _secret_problems(data, env) if require_secrets else ():
        issues.append(_issue(filename, _locate(root, loc), _label(loc, data), message))
    if issues or config is None:
        raise ConfigError(issues)
    return config


def _issue(filename: str, node: yaml.Node | None, field: str, message: str) -> ConfigIssue:
    if node is None:
        return ConfigIssue(filename, None, None, field, message)
    mark = node.start_mark
    return ConfigIssue(filename, mark.line + 1, mark.column + 1, field, message)


# --- YAML ------------------------------------------------------------------------------


def _compose(text: str, filename: str) -> tuple[yaml.Node | None, Any, list[ConfigIssue]]:
    """The node tree, the data built from it, and duplicate-key issues."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        dupes = _dupes(root)  # before construction, which merges `<<` keys into the nodes
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError([ConfigIssue(filename, line, column, "", _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
        position = getattr(exc, "position", None)
        line, column = _position(text, position) if isinstance(position, int) else (None, None)
        message = f"YAML: {str(exc).splitlines()[0]}"
        raise ConfigError([ConfigIssue(filename, line, column, "", message)]) from None
    except RecursionError:
        message = "YAML nested too deeply"
        raise ConfigError([ConfigIssue(filename, None, None, "", message)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    issues = [_issue(filename, key, _label(loc, data), why) for loc, key, why in dupes]
    return root, data, issues


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem, context = exc.problem or "", exc.context or ""
    if problem.startswith("but "):  # "expected a single document ..., but found another"
        message = f"{context}, {problem}"
    elif context and exc.context_mark:
        message = f"{problem} ({context} at line {exc.context_mark.line + 1})"
    else:
        message = problem or context
    if "<block end>" in problem or "mapping values are not allowed" in problem:
        message += "; check the indentation"  # PyYAML's words for the usual mistake
    return f"YAML: {message}"


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - before.rfind("\n")


def _dupes(root: yaml.Node | None) -> list[tuple[Loc, yaml.Node, str]]:
    # PyYAML keeps the last of two equal keys without a word: `interval` set twice in a
    # project is almost always an editing mistake, so it is an error here.
    found: list[tuple[Loc, yaml.Node, str]] = []
    seen: set[int] = set()  # aliases share nodes; visit each once (and survive cycles)

    def walk(node: yaml.Node, loc: Loc) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                where = (key.tag, key.value)
                if where in first:
                    why = f"duplicate key {key.value!r} (first at line {first[where]})"
                    found.append(((*loc, key.value), key, why))
                first.setdefault(where, key.start_mark.line + 1)
                walk(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    if root is not None:
        walk(root, ())
    return found


def _locate(root: yaml.Node | None, loc: Loc) -> yaml.Node | None:
    """The node for ``loc``, or the nearest ancestor present in the text (for a missing
    key: the object that lacks it). A mapping entry points at its key, as editors do."""
    node = target = root
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: target is that key
            break
        if isinstance(node, yaml.MappingNode):
            pairs = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(part)]
            if not pairs:
                break
            target, node = pairs[-1]  # the last wins, as in the constructed data
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            target = node = node.value[part]
        else:
            break
    return target


def _yaml_type(value: Any) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


# --- messages --------------------------------------------------------------------------


def _label(loc: Loc, data: Any) -> str:
    """``projects[email-blast].interval``: list items by their name when it is unique."""
    text, current = "", data
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) and isinstance(current, list):
            item = current[part] if 0 <= part < len(current) else None
            name = item.get("name") if isinstance(item, dict) else None
            names = [x.get("name") for x in current if isinstance(x, dict)]
            unique = isinstance(name, str) and name and names.count(name) == 1
            text += f"[{name}]" if unique else f"[{part}]"
            current = item
        elif isinstance(part, int):
            text += f"[{part}]"
            current = None
        else:
            text += f".{part}" if text else str(part)
            current = current.get(part) if isinstance(current, dict) else None
    return text


_OWN_MESSAGES = {"value_error", "assertion_error", "config_rule"}


def _message(error: Mapping[str, Any]) -> str:
    kind, loc, value = error["type"], error["loc"], error["input"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = suggest(str(loc[-1]), allowed)
        return f"unknown key{hint}" if hint else f"unknown key; allowed: {', '.join(allowed)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in _OWN_MESSAGES and isinstance(value, str | int | float | bool | None):
        shown = repr(value)
        message += f", got {shown[:60]}…" if len(shown) > 60 else f", got {shown}"
    return message


def _allowed_keys(loc: Loc) -> list[str]:
    """Field names of the model found at ``loc``, walking the annotations from Config."""
    annotation: Any = Config
    for part in (*loc, None):
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if part is None:
                return list(annotation.model_fields)
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            annotation = field.annotation if field else None
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return []
    return []


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation
    return annotation


def _secret_problems(data: Mapping[str, Any], env: Mapping[str, str]) -> list[tuple[Loc, str]]:
    """Contract projects whose ``control_secret_env`` names a variable unset in ``env``."""
    projects = data.get("projects")
    if data.get("demo_secrets") is True or not isinstance(projects, list):
        return []
    problems: list[tuple[Loc, str]] = []
    for i, project in enumerate(projects):
        if not isinstance(project, dict) or project.get("kind", "contract") != "contract":
            continue
        variable = project.get("control_secret_env")
        if isinstance(variable, str) and variable and not env.get(variable):
            message = f"environment variable {variable} (the /control secret) is not set"
            problems.append((("projects", i, "control_secret_env"), message))
    return problems
