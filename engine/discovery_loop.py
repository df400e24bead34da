"""Discovery that keeps up: everything once at start and on demand, the loopback ports every
`[network] discovery_interval` seconds, and a memory of which providers answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from muxtui.engine.config import Config, ProviderConfig
from muxtui.engine.discovery import (
    Discovered,
    DiscoveryTargets,
    discover,
    is_loopback,
    probe_loopback,
    provider_answers,
)
from muxtui.engine.pool import ClientPool

log = logging.getLogger("muxtui.engine.discovery")


class DiscoveryLoop:
    """Runs discovery for the engine and hands every changed result to `publish`."""

    def __init__(
        self,
        config: Config,
        pool: ClientPool,
        publish: Callable[[Discovered], None],
        targets: DiscoveryTargets | None = None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._publish = publish
        self.targets = targets or DiscoveryTargets()
        self.found = Discovered()
        self._lock: asyncio.Lock | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._asked: dict[str, bool] = {}  # providers asked directly, outside a discovery run

    async def run(self) -> None:
        """Probe the loopback ports, read API keys and list every reachable catalog."""
        async with self._locked():
            self._asked.clear()
            await discover(self._config, self._pool, self._merge, self.targets)

    async def probe_loopback(self) -> None:
        """Ask the loopback ports again: a server started since is added, a stopped one goes."""
        async with self._locked():
            self._merge(await probe_loopback(self._config, self._pool, self.targets))

    def start_polling(self) -> None:
        """Probe the loopback ports every `[network] discovery_interval` seconds (0 = never)."""
        interval = self._config.network.discovery_interval
        if interval > 0 and self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll(interval), name="muxtui-discovery")

    async def aclose(self) -> None:
        """Stop polling."""
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def loopback_providers(self) -> frozenset[str]:
        """Discovered providers on this machine (Ollama, the :8080 server)."""
        return frozenset(n for n, p in self.found.providers.items() if is_loopback(p))

    def keyed_providers(self) -> frozenset[str]:
        """Discovered providers that came from an API key in the environment."""
        return frozenset(self.found.providers) - self.loopback_providers()

    async def answers(self, name: str, provider: ProviderConfig) -> bool:
        """Whether provider `name` lists its models: what discovery saw, else asked now (once)."""
        known = self.found.answered.get(name)
        if known is not None:
            return known
        if name not in self._asked:
            timeout = self.targets.catalog_timeout
            self._asked[name] = await provider_answers(name, provider, self._pool, timeout)
        return self._asked[name]

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.probe_loopback()
            except Exception:
                log.exception("probing the loopback ports failed")

    def _merge(self, found: Discovered) -> None:
        before, self.found = self.found, self.found.merged(found)
        # Only a change in what can be used is news; who answered is kept quietly.
        if (before.providers, before.models) != (self.found.providers, self.found.models):
            self._publish(self.found)

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        # One run at a time: a poll landing mid-run would publish a half-old result.
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield
