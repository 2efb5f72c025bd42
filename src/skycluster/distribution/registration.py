"""Keeps this node's name registered with its host's port mapper.

Like Erlang starting ``epmd`` on demand: when no port mapper answers, the node
serves one itself. When the node hosting it stops or dies, the registration
connections of the other nodes on the host close; each then registers again,
and one of them, whichever binds the port first, becomes the new port mapper.
Discovery keeps working with no operator action.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random

from skycluster._backoff import Backoff
from skycluster.distribution import portmapper
from skycluster.distribution.epmd_protocol import HIGHEST_VERSION, LOWEST_VERSION, SKYCLUSTER_EXTRA
from skycluster.distribution.settings import PortMapperSettings
from skycluster.errors import StartError

log = logging.getLogger("skycluster.registration")


class RegistrationKeeper:
    """Keeps ``name`` at ``port`` registered, through one
    :class:`~skycluster.distribution.portmapper.Registration` at a time; hosts the port
    mapper when nobody else does."""

    def __init__(
        self,
        name: str,
        port: int,
        settings: PortMapperSettings,
        *,
        hidden: bool,
        versions: tuple[int, int] = (HIGHEST_VERSION, LOWEST_VERSION),
    ) -> None:
        self.name = name
        self.port = port
        self.settings = settings
        self.hidden = hidden
        self.versions = versions  # (highest, lowest): (6, 6) when Erlang nodes dial it too
        self.server: portmapper.PortMapperServer | None = None
        self.registration: portmapper.Registration | None = None
        self.reregistrations = 0

    async def register_first(self) -> None:
        """The first registration, done before the node reports it started: a name
        already registered on this host is a start error, not a silent replacement."""
        where = f"{self.settings.client_host}:{self.settings.port}"
        try:
            await self._register()
        except portmapper.NameTaken:
            raise StartError(
                f"a node named {self.name!r} is already registered on this host "
                f"(port mapper at {where}); stop it or choose another name"
            ) from None
        except portmapper.PortMapperUnavailable as exc:
            # Something holds the port but does not answer (a frozen node serving it):
            # start anyway, reachable by port; keep() registers once it answers again.
            log.warning("starting without a port mapper registration for now: %s", exc)
        except (portmapper.PortMapperError, OSError) as exc:
            # No usable port mapper and none could be served (e.g. --epmd-bind is not an
            # address of this host, or something that is not a port mapper holds the port).
            raise StartError(
                f"cannot register {self.name!r} with the port mapper at {where}: {exc}; "
                "fix --epmd-port/--epmd-bind (SKYCLUSTER_EPMD_PORT, SKYCLUSTER_EPMD_BIND), "
                "or run without it (--no-port-mapper)"
            ) from None

    async def keep(self) -> None:
        """Run until cancelled: re-register whenever the registration is lost."""
        backoff = Backoff(0.4, 5.0)  # between failed attempts
        while True:
            if self.registration is not None and not self.registration.closed:
                await self.registration.wait_lost()
                await self.registration.close()  # its connection is dead: release it
                log.info("the port mapper went away; registering %s again", self.name)
                self.reregistrations += 1
            # Spread the survivors out so that one of them binds the port first.
            await asyncio.sleep(random.uniform(0.0, 0.2))
            try:
                await self._register()
                backoff.reset()
            except (portmapper.PortMapperError, OSError) as exc:
                delay = backoff.next()
                level = logging.WARNING if backoff.attempts == 1 else logging.DEBUG
                log.log(level, "cannot register %s with a port mapper: %s", self.name, exc)
                await asyncio.sleep(delay)

    async def _register(self) -> None:
        host, port = self.settings.client_host, self.settings.port
        for _ in range(3):
            try:
                self.registration = await portmapper.register(
                    self.name,
                    self.port,
                    host=host,
                    epmd_port=port,
                    hidden=self.hidden,
                    timeout=self.settings.timeout,
                    versions=self.versions,
                    extra=SKYCLUSTER_EXTRA,
                )
                return
            except portmapper.PortMapperUnavailable:
                if not await self._serve():
                    await asyncio.sleep(random.uniform(0.05, 0.2))
        raise portmapper.PortMapperUnavailable(
            f"no port mapper answers at {host}:{port} and none could be started there"
        )

    async def _serve(self) -> bool:
        """Become the host's port mapper; False when someone else already listens."""
        if self.server is not None:
            return True
        server = portmapper.PortMapperServer(self.settings)
        try:
            await server.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False  # another node won the race: register with it
            raise
        self.server = server
        log.info("serving the port mapper on %s:%s", self.settings.bind or "0.0.0.0", server.port)
        return True

    async def close(self) -> None:
        if self.registration is not None:
            await self.registration.close()
        if self.server is not None:
            await self.server.stop()
