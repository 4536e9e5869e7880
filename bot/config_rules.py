"""Config rules that span objects (duplicate names, references between projects and
orchestrators, inherited timeout vs interval, demo secrets on loopback only).

They read ``Config``'s raw input (mappings from YAML, or models handed to ``Config(...)``)
and skip whatever is malformed there: field validation reports that part.  Each problem
carries its own ``loc``, so one pass reports every problem at its own place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import InitErrorDetails, PydanticCustomError

from bot.config_values import is_loopback_url, parse_duration, suggest


def reraisable(error: Any) -> InitErrorDetails:
    # Errors already rendered keep their type name and text; the message is final, so it
    # becomes a template without context (pydantic then leaves braces in it alone).
    return {
        "type": PydanticCustomError(error["type"], error["msg"]),
        "loc": error["loc"],
        "input": error["input"],
    }


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None) if isinstance(obj, BaseModel) else None


def _strs(value: Any) -> list[tuple[int, str]]:
    items = value if isinstance(value, list) else []
    return [(i, v) for i, v in enumerate(items) if isinstance(v, str)]


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        return None


def cross_problems(data: Any, builtin: Mapping[str, Any]) -> list[InitErrorDetails]:
    """Every cross-object problem in ``data``; ``builtin`` holds the built-in default
    timeout and interval (used when neither the file's defaults nor the project set them)."""
    out: list[InitErrorDetails] = []

    def add(loc: tuple[str | int, ...], message: str, value: Any) -> None:
        out.append(
            {"type": PydanticCustomError("config_rule", message), "loc": loc, "input": value}
        )

    projects = _get(data, "projects")
    projects = projects if isinstance(projects, list) else []
    first: dict[str, int] = {}  # project name -> index of its first use
    for i, name in _strs([_get(p, "name") for p in projects]):
        if name in first:
            add(("projects", i, "name"), f"name {name!r} is taken by projects[{first[name]}]", name)
        first.setdefault(name, i)
    groups = _get(data, "orchestrators")
    owner: dict[str, str] = {}  # project name -> the orchestrator listing it first
    for group_name, group in groups.items() if isinstance(groups, Mapping) else ():
        for j, member in _strs(_get(group, "projects")):
            loc = ("orchestrators", group_name, "projects", j)
            if member not in first:
                add(loc, f"unknown project {member!r}{suggest(member, first)}", member)
            elif member in owner:
                add(loc, f"project {member!r} is already in orchestrator {owner[member]!r}", member)
            owner.setdefault(member, group_name)
    defaults = _get(data, "defaults")
    inherited = {k: _get(defaults, k) or builtin[k] for k in ("timeout", "interval")}
    for i, project in enumerate(projects):
        own_name = _get(project, "name")
        for j, dep in _strs(_get(project, "depends_on")):
            if dep == own_name:
                add(("projects", i, "depends_on", j), "a project cannot depend on itself", dep)
            elif dep not in first:
                add(
                    ("projects", i, "depends_on", j),
                    f"unknown project {dep!r}{suggest(dep, first)}",
                    dep,
                )
        # Membership is declared under orchestrators; a dumped Config repeats it here.
        group = _get(project, "orchestrator")
        if group is not None and group != owner.get(own_name if isinstance(own_name, str) else ""):
            add(
                ("projects", i, "orchestrator"),
                "list the project under orchestrators.<name>.projects instead",
                group,
            )
        # One of the pair may be inherited; with both inherited, Defaults checks the pair.
        own = {k: _get(project, k) for k in inherited}
        timeout, interval = (_seconds(inherited[k] if own[k] is None else own[k]) for k in own)
        if timeout and interval and timeout > interval and any(v is not None for v in own.values()):
            key = "timeout" if own["timeout"] is not None else "interval"
            add(
                ("projects", i, key),
                f"timeout {timeout:g}s is longer than interval {interval:g}s",
                own[key],
            )
        for key in ("url", "control_url") if _get(data, "demo_secrets") is True else ():
            url = _get(project, key)
            if isinstance(url, str) and not is_loopback_url(url):
                add(
                    ("projects", i, key),
                    "demo_secrets: true allows only loopback URLs (127.0.0.0/8, ::1, localhost)",
                    url,
                )
    out.extend(_dependency_cycles(projects, first))
    return out


def _dependency_cycles(projects: list[Any], first: Mapping[str, int]) -> list[InitErrorDetails]:
    """Each ``depends_on`` cycle once, at the entry that closes it: a cycle has no root
    cause to fold an outage into (agents.dependencies).  Unknown names and self-references
    are reported above and skipped here.  Iterative, so a long chain cannot overflow."""
    edges: dict[str, list[tuple[int, int, str]]] = {}  # name -> (project index, entry, dep)
    for i, project in enumerate(projects):
        name = _get(project, "name")
        if isinstance(name, str) and first.get(name) == i:
            deps = _strs(_get(project, "depends_on"))
            edges[name] = [(i, j, d) for j, d in deps if d in first and d != name]
    out: list[InitErrorDetails] = []
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        path = [start]  # the depth-first walk's current chain, and where each one stands
        todo = [iter(edges.get(start, ()))]
        while todo:
            step = next(todo[-1], None)
            if step is None:
                done.add(path.pop())
                todo.pop()
                continue
            i, j, dep = step
            if dep in path:
                cycle = " -> ".join([*path[path.index(dep) :], dep])
                error = PydanticCustomError("config_rule", f"depends_on forms a cycle: {cycle}")
                out.append({"type": error, "loc": ("projects", i, "depends_on", j), "input": dep})
            elif dep not in done:
                path.append(dep)
                todo.append(iter(edges.get(dep, ())))
    return out
