"""Which addresses orch connects to for a project (server-side request forgery guard).

orch calls URLs taken from ``projects.yml`` only, but a host name there is only as
trustworthy as its DNS: a name that starts resolving to the cloud metadata service or to
an internal address would let whoever controls that DNS aim orch's probes and signed
``/control`` calls at things the operator never listed. The rules:

- **Always refused:** link-local addresses (169.254.0.0/16, fe80::/10, where clouds put
  their metadata and credential services), the metadata addresses outside that range
  (``fd00:ec2::254`` on AWS, ``100.100.100.200`` on Alibaba Cloud), unspecified and
  multicast addresses. An address literal of these in a URL is refused at config load
  (``literal_refusal``); a name resolving to one is refused at connect time.
- **Loopback and private** (anything not globally routable: 10/8, 172.16/12, 192.168/16,
  100.64/10, fc00::/7, 127/8, ::1): allowed when the config says so, either by writing
  the address itself (``http://10.0.4.9:9100``, ``http://127.0.0.1:8101``, or
  ``localhost``) or with ``private_network: true`` on the project (or in ``defaults``)
  for a host name that resolves to one.
- Everything else (public addresses) is allowed.

The check sits in the connector's resolver (``GuardedResolver``), so the address checked
is the address connected to: a name that re-resolves to another address between two
probes is checked again, and there is no window between checking and connecting. aiohttp
skips the resolver for address literals; those were checked when the config was loaded.
Redirects are never followed anywhere (``allow_redirects=False`` on every project call).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = IPv4Address | IPv6Address


class AddressRefused(OSError):
    """A name resolved only to addresses orch does not connect to (the message says why)."""


_METADATA: Final = (ip_address("fd00:ec2::254"), ip_address("100.100.100.200"))


def _ip(text: str) -> IPAddress | None:
    try:
        address = ip_address(text.split("%", 1)[0])  # an IPv6 zone id is not the address
    except ValueError:
        return None
    # ::ffff:169.254.169.254 reaches 169.254.169.254: judge the IPv4 address inside.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def always_refused(address: IPAddress) -> str | None:
    """Why nothing may connect to ``address``, or None."""
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address (cloud metadata and credentials live there)"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    return None


def refusal(address: str, *, private_ok: bool) -> str | None:
    """Why connecting to ``address`` (an IP in text) is refused, or None when allowed."""
    ip = _ip(address)
    if ip is None:
        return f"{address!r} is not an IP address"
    reason = always_refused(ip)
    if reason is not None:
        return f"{ip} is {reason}"
    if not ip.is_global and not private_ok:
        kind = "loopback" if ip.is_loopback else "private"
        return f"{ip} is a {kind} address and the project does not set private_network: true"
    return None


def literal_refusal(url: str) -> str | None:
    """For config load: why a URL whose host is an address literal is refused, or None
    (host names are checked when they are resolved)."""
    ip = _ip(urlsplit(url).hostname or "")
    if ip is None:
        return None
    reason = always_refused(ip)
    return None if reason is None else f"{ip} is {reason}; orch never connects there"


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default) and keeps only allowed addresses.

    ``private_ok(host)`` says whether the config allows private and loopback addresses
    for that host name (``private_network: true`` on a project using it, or the name
    ``localhost``). When no address is left the lookup fails with the reason, which the
    probe reports as its connection error.
    """

    def __init__(
        self, private_ok: Callable[[str], bool], inner: AbstractResolver | None = None
    ) -> None:
        self._private_ok = private_ok
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        private_ok = host.lower().rstrip(".") == "localhost" or self._private_ok(host)
        kept: list[ResolveResult] = []
        reasons: list[str] = []
        for result in found:
            reason = refusal(result["host"], private_ok=private_ok)
            if reason is None:
                kept.append(result)
            else:
                reasons.append(reason)
        if not kept:
            why = "; ".join(dict.fromkeys(reasons)) or "no address"
            raise AddressRefused(f"{host} resolves only to refused addresses: {why}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
