"""Who depends on whom (``depends_on``), and which outage explains which: pure functions
over the config, shared by the folder, the Auto-Fixer and the notifier.

The config refuses unknown names and cycles (``bot.config_rules``); the walks still keep a
visited set, so a config built some other way cannot loop them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from bot.config import Config
from storage.base import Incident


def dependencies_of(config: Config, name: str) -> list[str]:
    """Every project ``name`` depends on, directly or through others, nearest first."""
    try:
        todo = list(config.project(name).depends_on)
    except KeyError:
        return []
    seen: list[str] = []
    while todo:
        dep = todo.pop(0)
        if dep == name or dep in seen:
            continue
        seen.append(dep)
        try:
            todo.extend(config.project(dep).depends_on)
        except KeyError:
            continue
    return seen


def dependents_of(config: Config, name: str) -> set[str]:
    """Every project that depends on ``name``, directly or through others."""
    return {p.name for p in config.projects if name in dependencies_of(config, p.name)}


def has_dependencies(config: Config, name: str) -> bool:
    try:
        return bool(config.project(name).depends_on)
    except KeyError:
        return False


def explained_by_dependency(config: Config, down: Collection[str]) -> set[str]:
    """The projects of ``down`` that depend on another project of ``down``: their outage
    has a cause orch already sees, so they are neither evidence of orch's own network
    failing (mass failure) nor something to restart."""
    down_set = set(down)
    return {n for n in down_set if any(d in down_set for d in dependencies_of(config, n))}


def root_cause(config: Config, name: str, down: Mapping[str, Incident]) -> Incident | None:
    """The open ``down`` incident (``down``: project -> its open down incident) that
    explains ``name``'s outage: of ``name``'s dependencies that are down, one whose own
    dependencies are all up (the deepest cause) and that is not itself folded (into a
    root that just recovered: it may yet recover too).  Several independent causes: the
    oldest outage, then the name, so every replica picks the same one."""
    deps = dependencies_of(config, name)
    roots = [
        down[d]
        for d in deps
        if d in down
        and down[d].caused_by is None
        and not any(x in down for x in dependencies_of(config, d))
    ]
    return min(roots, key=lambda i: (i.opened_at, i.project), default=None)


def within_grace(first: datetime, then: datetime, grace_s: float) -> bool:
    """``first`` is at most ``grace_s`` seconds before ``then`` (or after it)."""
    return (then - first).total_seconds() <= grace_s
