"""Contract tests of ``storage.incident_links`` on every backend (SQLite and PostgreSQL):
an incident folded into another's (``caused_by``), set and cleared as a compare-and-set
with its event, and the lookups the notifier and the Auto-Fixer read.

The backends and their fixtures are ``tests.test_store_contract``'s (one list, reused).
"""

from __future__ import annotations

import asyncio

import pytest

from agents.events import INCIDENT_OPENED, INCIDENT_RESOLVED, INCIDENT_UPDATED
from storage.base import Incident, Store
from tests.test_store_contract import (  # noqa: F401  (fixtures, used by name)
    OpenStore,
    announce,
    at,
    backend_name,
    explode,
    incident,
    open_new,
    store,
)

pytestmark = pytest.mark.timeout(30)


async def opened(store: Store, fingerprint: str, seconds: float = 0) -> Incident:  # noqa: F811
    row = await store.open_incident(incident(fingerprint, seconds), announce(INCIDENT_OPENED))
    assert row is not None
    return row


async def test_a_new_incident_has_no_cause_and_can_be_opened_with_one(
    store: Store,  # noqa: F811
) -> None:
    db = await opened(store, "db:down")
    assert db.caused_by is None
    api = await store.open_incident(
        incident("api:down", 1, caused_by=db.id), announce(INCIDENT_OPENED)
    )
    assert api is not None and api.caused_by == db.id
    assert await store.get_open_incident("api:down") == api
    assert [i.id for i in await store.incidents_caused_by(db.id)] == [api.id]


async def test_link_sets_the_cause_with_its_event_and_only_from_the_expected_value(
    store: Store,  # noqa: F811
) -> None:
    db = await opened(store, "db:down")
    api = await opened(store, "api:down", 1)
    calls: list[Incident] = []
    linked = await store.link_incident(
        api.id, db.id, expected=None, event_for=announce(INCIDENT_UPDATED, calls)
    )
    assert linked is not None and linked.caused_by == db.id
    assert calls == [linked]  # the event was built from the stored row
    [event] = await store.list_events(types=[INCIDENT_UPDATED])
    assert (event.incident_id, event.project) == (api.id, "api")
    # A second reconciler that still saw it unlinked changes nothing, and writes no event.
    update = announce(INCIDENT_UPDATED)
    assert await store.link_incident(api.id, "other", expected=None, event_for=update) is None
    assert (await store.get_incident(api.id)) == linked
    assert len(await store.list_events(types=[INCIDENT_UPDATED])) == 1
    # Clearing it (the outage becomes its own) is the same compare-and-set.
    released = await store.link_incident(
        api.id, None, expected=db.id, event_for=announce(INCIDENT_UPDATED)
    )
    assert released is not None and released.caused_by is None
    assert await store.incidents_caused_by(db.id) == []


async def test_a_resolved_incident_is_not_linked_but_stays_listed(
    store: Store,  # noqa: F811
) -> None:
    db = await opened(store, "db:down")
    api = await opened(store, "api:down", 1)
    web = await opened(store, "web:down", 2)
    for row in (api, web):
        update = announce(INCIDENT_UPDATED)
        await store.link_incident(row.id, db.id, expected=None, event_for=update)
    resolved = await store.resolve_incident("api:down", at(30), announce(INCIDENT_RESOLVED))
    assert resolved is not None and resolved.caused_by == db.id  # the link is history
    update = announce(INCIDENT_UPDATED)
    assert await store.link_incident(api.id, None, expected=db.id, event_for=update) is None
    folded = await store.incidents_caused_by(db.id)
    assert [(i.project, i.state) for i in folded] == [("api", "resolved"), ("web", "open")]
    assert await store.incidents_caused_by(db.id, limit=1) == folded[:1]
    assert await store.get_incident("nothing") is None
    # Every reader of incidents carries the link.
    listed = {i.project: i.caused_by for i in await store.list_incidents()}
    assert listed == {"db": None, "api": db.id, "web": db.id}


async def test_a_failing_event_rolls_the_link_back(store: Store) -> None:  # noqa: F811
    db = await opened(store, "db:down")
    api = await opened(store, "api:down", 1)
    with pytest.raises(RuntimeError):
        await store.link_incident(api.id, db.id, expected=None, event_for=explode)
    assert (await store.get_incident(api.id)) == api
    assert await store.list_events(types=[INCIDENT_UPDATED]) == []


async def test_two_stores_racing_to_link_link_once(open_new: OpenStore) -> None:  # noqa: F811
    first, second = await open_new(), await open_new()
    db = await opened(first, "db:down")
    api = await opened(first, "api:down", 1)
    results = await asyncio.gather(
        *(s.link_incident(api.id, db.id, expected=None, event_for=announce(INCIDENT_UPDATED))
          for s in (first, second, first, second))
    )  # fmt: skip
    assert sum(r is not None for r in results) == 1
    assert len(await first.list_events(types=[INCIDENT_UPDATED])) == 1
