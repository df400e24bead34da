"""The Engine's hardware and fit methods (a mixin of the facade, kept beside the fit code)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from muxtui.engine.backends.base import Endpoint
from muxtui.engine.retry import ATTEMPT_FAILURES, classify

if TYPE_CHECKING:
    from muxtui.engine.chat import ChatStreamer
    from muxtui.engine.config import Config
    from muxtui.engine.fit.apply import AppliedFlags
    from muxtui.engine.fit.hardware import HardwareProfile
    from muxtui.engine.fit.measure import FitRecord
    from muxtui.engine.fit.recommend import WhatIf
    from muxtui.engine.fit.report import FitReport, ProviderCheck
    from muxtui.engine.fit.shape import ModelShape
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

    async def what_if(
        self,
        shape: ModelShape,
        hardware: HardwareProfile,
        *,
        ctx: int,
        parallel: int,
        kv_type: str,
    ) -> WhatIf:
        """A model's estimate per device for a context, slots and KV cache type, with the
        `-ngl` that fits and the largest context per `-ngl` (computed in a thread)."""
        from muxtui.engine.fit.recommend import what_if

        return await asyncio.to_thread(
            what_if, shape, hardware, ctx=ctx, parallel=parallel, kv_type=kv_type
        )

    async def apply_recommendation(self, name: str, flags: Sequence[str]) -> AppliedFlags:
        """Write `flags` into the config's `[local.NAME]` cmd, replacing the same flags there
        (a model found in a folder gets its own entry); comments kept, atomic, mode 0600.

        Raises a MuxtuiError (one line, nothing written) for an unknown model, a config file
        that is not valid TOML or not writable, or a command that does not run llama-server.
        """
        from muxtui.engine.errors import LocalServerError, UnknownModelError
        from muxtui.engine.fit.apply import write_flags
        from muxtui.engine.local.models import DEFAULT_LLAMA_CMD

        if self.servers.discovery is None:
            await self.servers.refresh()
        found = self.servers.discovery
        specs = {spec.name: spec for spec in found.models} if found is not None else {}
        spec = specs.get(name)
        if spec is None:
            raise UnknownModelError(name, list(specs))
        if spec.bundled_model and not await asyncio.to_thread(os.path.isfile, spec.path):
            raise LocalServerError(
                name,
                "its file is put together the first time it starts; start it once "
                "(Models pane: p), then apply the flags again",
            )
        default_cmd = spec.cmd if spec.source == "bundled" else DEFAULT_LLAMA_CMD
        applied, written = await asyncio.to_thread(
            write_flags,
            self.paths.config_file,
            name,
            flags,
            default_cmd=default_cmd,
            model_path=spec.path,
        )
        self.config.local[name] = written.local[name]  # the next start uses the new flags
        await self.servers.refresh()
        return applied
