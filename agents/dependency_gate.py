"""What the Auto-Fixer must leave alone because of a dependency (``depends_on``), so that
orch never restarts the wrong thing: a project down because its database is down is not
restarted (restarting it cannot help, and hides the cause); the database is.

The rule for one open ``down`` incident, in order (``agents.dependencies`` folds and
holds by the same rule):

1. folded into a dependency's incident (``caused_by``): stand down; the root's own
   policy acts on the root, its escalation and analysis cover both;
2. a project with ``depends_on``, down for less than ``dependency_grace``: wait, its
   dependency's outage may not be confirmed yet (dependents often fail first);
3. a dependency (direct or transitive) has an open down incident (an older outage of
   this project, not folded): stand down while it lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agents.dependency_graph import dependencies_of
from agents.incidents import down_fingerprint
from bot.config import Config
from storage.base import Incident, Store


@dataclass(frozen=True, slots=True)
class Hold:
    kind: str  # wait | stand_down (the Auto-Fixer's Decision kinds)
    why: str


async def dependency_hold(
    store: Store, config: Config, incident: Incident, now: datetime
) -> Hold | None:
    """Why ``incident`` must not be remediated now because of a dependency; None if not."""
    if incident.condition != "down":
        return None
    if incident.caused_by is not None:
        root = await store.get_incident(incident.caused_by)
        where = f"{root.project}'s" if root is not None else "a dependency's"
        return Hold("stand_down", f"folded into {where} outage: only the root is remediated")
    deps = dependencies_of(config, incident.project)
    if not deps:
        return None
    grace = config.defaults.dependency_grace
    if now < incident.opened_at + timedelta(seconds=grace):
        return Hold("wait", f"a dependency may be down too: waiting {grace:g}s before acting")
    for dep in deps:
        if await store.get_open_incident(down_fingerprint(dep)) is not None:
            return Hold("stand_down", f"its dependency {dep} is down")
    return None
