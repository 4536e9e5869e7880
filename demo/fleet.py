"""The simulated fleet: Email Blast, Chatbot and Social Media Automator, each on its own
worker port plus a supervisor port, built from ``projects.yml`` or on ephemeral ports."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from types import TracebackType
from urllib.parse import urlsplit

from agents.clock import Clock, SystemClock
from bot.config import Config, Project
from bot.secrets import control_secret
from demo.services import DOMAINS, SimulatedService


def _domain_class(name: str) -> type:
    try:
        return DOMAINS[name]
    except KeyError:
        raise ValueError(
            f"no simulation for project {name!r}; the demo fleet simulates {', '.join(DOMAINS)}"
        ) from None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None  # the config validator guarantees a host
    port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


class Fleet:
    def __init__(
        self,
        services: Iterable[SimulatedService],
        urls: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self._services = {service.name: service for service in services}
        # Advertised (url, control_url) per project; unset for ephemeral fleets, whose URLs
        # are known only once the ports are bound.
        self._urls = dict(urls or {})
        self._started: list[SimulatedService] = []

    @classmethod
    def from_config(
        cls,
        config: Config,
        env: Mapping[str, str],
        clock: Clock | None = None,
        host_override: str | None = None,
        *,
        seed: int = 0,
        starting_s: float = 3.0,
    ) -> Fleet:
        """One service per project in ``config``; every project must be a demo project with
        a ``control_url`` and a secret.  ``host_override`` binds another interface (e.g.
        ``0.0.0.0`` in a container) while the config URLs stay what clients use."""
        if not config.projects:
            raise ValueError("the config has no projects to simulate")
        clock = clock or SystemClock()
        services, urls = [], {}
        for project in config.projects:
            domain_cls = _domain_class(project.name)
            secret, control_url = _checked(project, config, env)
            host, port = _host_port(project.url)
            control_host, control_port = _host_port(control_url)
            services.append(
                SimulatedService(
                    domain_cls(random.Random(f"{seed}:{project.name}")),
                    secret=secret,
                    clock=clock,
                    host=host_override or host,
                    port=port,
                    control_host=host_override or control_host,
                    control_port=control_port,
                    starting_s=starting_s,
                )
            )
            if port and control_port:  # port 0 (tests): report the bound ports instead
                urls[project.name] = (project.url, control_url)
        return cls(services, urls)

    @classmethod
    def ephemeral(
        cls,
        names: Iterable[str],
        secrets: Mapping[str, bytes],
        clock: Clock | None = None,
        *,
        host: str = "127.0.0.1",
        seed: int = 0,
        starting_s: float = 3.0,
    ) -> Fleet:
        """Services on free ports (for tests); ask :meth:`url` / :meth:`control_url` after
        :meth:`start`."""
        clock = clock or SystemClock()
        services = []
        for name in names:
            if name not in secrets:
                raise ValueError(f"no secret given for project {name!r}")
            services.append(
                SimulatedService(
                    _domain_class(name)(random.Random(f"{seed}:{name}")),
                    secret=secrets[name],
                    clock=clock,
                    host=host,
                    starting_s=starting_s,
                )
            )
        return cls(services)

    @property
    def names(self) -> list[str]:
        return list(self._services)

    def service(self, name: str) -> SimulatedService:
        try:
            return self._services[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in the fleet; it has {self.names}") from None

    def url(self, name: str) -> str:
        """Where the worker (the whole contract) answers."""
        return self._urls[name][0] if name in self._urls else self.service(name).url

    def control_url(self, name: str) -> str:
        """Where the supervisor (``/control`` and the demo fault route) answers."""
        return self._urls[name][1] if name in self._urls else self.service(name).control_url

    def inject(self, name: str, fault: str) -> asyncio.Future[None]:
        """See :meth:`SimulatedService.inject` (awaiting is optional)."""
        return self.service(name).inject(fault)

    def clear(self, name: str, fault: str | None = None) -> asyncio.Future[None]:
        return self.service(name).clear(fault)

    async def start(self) -> None:
        try:
            for service in self._services.values():
                self._started.append(service)
                await service.start()
        except BaseException:
            await self.stop()  # a port in use must not leave the others listening
            raise

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _checked(project: Project, config: Config, env: Mapping[str, str]) -> tuple[bytes, str]:
    if project.kind != "contract":
        raise ValueError(f"project {project.name}: the demo fleet serves kind: contract only")
    if not project.control_url:
        raise ValueError(
            f"project {project.name}: the demo fleet needs control_url (the supervisor port "
            "that outlives a crash)"
        )
    secret = control_secret(project, config, env)
    if not secret:
        raise ValueError(
            f"project {project.name}: no control secret; set {project.control_secret_env} "
            "or demo_secrets: true"
            if project.control_secret_env
            else f"project {project.name}: control_secret_env is not set"
        )
    return secret, project.control_url
