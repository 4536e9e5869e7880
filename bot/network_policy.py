"""The config's side of the SSRF guard (agents.address_guard): which host names may
resolve to private or loopback addresses, read from the config as it is now.

Both of orch's HTTP clients resolve through it: the aiohttp session's connector
(``/control`` and ``/logs`` calls, probe URLs with user info) and the lean client that
sends the probes (``lean_probe_client``).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from agents.address_guard import GuardedResolver
from agents.lean_http import LeanHttp
from bot.config import Config


def private_hosts(config: Config) -> frozenset[str]:
    """Host names of the URLs of projects with ``private_network: true``."""
    return frozenset(
        (urlsplit(url).hostname or "").lower()
        for p in config.projects
        if p.private_network
        for url in (p.url, p.control_url)
        if url
    )


def guarded_resolver(
    config: Callable[[], Config], inner: AbstractResolver | None = None
) -> GuardedResolver:
    """A resolver for the probe session that follows config reloads: the set of hosts is
    rebuilt when the config object changes, not on every lookup."""
    seen: list[tuple[Config, frozenset[str]]] = []

    def private_ok(host: str) -> bool:
        current = config()
        if not seen or seen[0][0] is not current:
            seen[:] = [(current, private_hosts(current))]
        return host.lower().rstrip(".") in seen[0][1]

    return GuardedResolver(private_ok, inner)


def lean_probe_client(config: Callable[[], Config], keepalive: float) -> LeanHttp:
    """The probe client: guarded like the session (its own resolver), the same
    keep-alive, lookups reused for 300 s as the session's DNS cache does, certificates
    verified against the system's CAs as the session's default context does."""
    return LeanHttp(guarded_resolver(config), keepalive=keepalive, dns_ttl=300.0)
