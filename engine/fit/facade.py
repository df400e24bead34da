"""The Engine's hardware and fit methods (a mixin of the facade, kept beside the fit code)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from muxtui.engine.backends.base import Endpoint
from muxtui.engine.retry import ATTEMPT_FAILURES, classify

if TYPE_CHECKING:
    from muxtui.engine.chat import ChatStreamer
    from muxtui.engine.config import Config
    from muxtui.engine.fit.hardware import HardwareProfile
    from muxtui.engine.fit.measure import FitRecord
    from muxtui.engine.fit.report import FitReport, ProviderCheck
    from muxtui.engine.local.manager import ServerManager
    from muxtui.engine.paths import Paths


class FitMixin:
    """What this machine can run: hardware, per-model fit, providers reachable, measurements."""

    config: Config
    paths: Paths
    servers: ServerManager
    _streamer: ChatStreamer

    async def hardware(self) -> HardwareProfile:
        """What this machine has to run models on (CPU, memory, GPUs), probed in a thread."""
        from muxtui.engine.fit.hardware import detect_hardware

        return await asyncio.to_thread(detect_hardware)

    async def fit_report(self, *, projection: bool = False) -> FitReport:
        """Hardware, every local model's fit and recommendation, runtimes and providers."""
        from muxtui.engine.fit.report import (
            build_report,
            fit_store,
            inputs_from_discovery,
            projection_runtime,
        )

        await self.servers.refresh()
        found = self.servers.discovery
        models, runtimes = inputs_from_discovery(found)
        second = None
        if projection and runtimes:
            _, binary, env = runtimes[0]
            second = await asyncio.to_thread(projection_runtime, binary, env)
        return await build_report(
            models,
            runtimes,
            self.check_providers(),
            fit_store(self.paths.data_dir),
            projection_runtime=second,
        )

    async def check_providers(self, timeout: float = 5.0) -> list[ProviderCheck]:
        """Ask every configured provider endpoint for its model list, timing the answer."""
        from muxtui.engine.fit.report import ProviderCheck

        async def probe(name: str, kind: str, endpoint: Endpoint, limit: int) -> ProviderCheck:
            started = time.monotonic()
            try:
                ids = await self._streamer.backend(kind, endpoint, limit).list_models(
                    timeout=timeout
                )
            except (*ATTEMPT_FAILURES, OSError) as exc:
                detail = str(classify(exc, endpoint).error) if not isinstance(exc, OSError) else ""
                return ProviderCheck(name, endpoint.base_url, False, None, 0, detail or repr(exc))
            return ProviderCheck(
                name, endpoint.base_url, True, time.monotonic() - started, len(ids)
            )

        probes = []
        for name, provider in self.config.providers.items():
            for url in provider.urls:
                endpoint = Endpoint(
                    name, url, provider.resolved_api_key(), provider.api_key_env, provider.headers
                )
                probes.append(probe(name, provider.kind, endpoint, provider.max_connections))
        return list(await asyncio.gather(*probes))

    async def record_fit(
        self, model_path: str, pid: int, argv: Sequence[str], phase: str = "first_request"
    ) -> FitRecord:
        """Measure a running server's memory and store it beside the estimate for `argv`."""
        from muxtui.engine.fit.measure import record_measurement
        from muxtui.engine.fit.report import fit_store

        store = fit_store(self.paths.data_dir)
        return await asyncio.to_thread(
            record_measurement, store, pid, model_path, list(argv), phase=phase
        )
