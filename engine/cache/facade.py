"""The Engine's response-cache methods (a mixin of the facade, kept beside the cache)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from muxtui.engine.cache.store import ResponseCache, open_cache
from muxtui.engine.events import ResponseCacheChanged

if TYPE_CHECKING:
    from muxtui.engine.router import Target

EDGE_BYTES = 2**20  # a GGUF file's identity hashes its size, first and last MiB


def file_identity(path: str) -> str:
    """A model file's identity: sha256 over its size and its first and last MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        digest.update(str(size).encode())
        digest.update(file.read(EDGE_BYTES))
        if size > EDGE_BYTES:
            file.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(file.read(EDGE_BYTES))
    return "gguf:" + digest.hexdigest()


def remote_identity(target: Target) -> str:
    """A remote model's identity: its provider and id, and the hosts that serve it."""
    hosts = sorted({urlsplit(e.base_url).hostname or "" for e in target.endpoints} - {""})
    where = "@" + ",".join(hosts) if hosts else ""
    return f"{target.provider}:{target.model_id}{where}"


class CacheMixin:
    """The reply cache shared by chat, batch and serve, and what keys its entries."""

    @functools.cached_property
    def response_cache(self) -> ResponseCache:
        """The cache `[response_cache]` configures (a no-op one when it is "off")."""
        from muxtui.engine.core import Engine

        assert isinstance(self, Engine)
        cache = open_cache(self.config.response_cache, self.paths)
        engine = self

        def told(healthy: bool) -> None:
            where = cache.where()
            message = (
                f"reply cache: {where} answers again"
                if healthy
                else f"reply cache: {where} cannot be used; replies go uncached until it can"
            )
            engine.emit(ResponseCacheChanged(cache.backend, healthy, message))

        cache.on_health = told
        return cache

    @functools.cached_property
    def _file_identities(self) -> dict[tuple[str, int, int], str]:
        return {}

    async def model_identity(self, model: str) -> str:
        """What really answers `model`: its GGUF file's identity for a local model, else
        "provider:model_id@host" (raises `UnknownModelError` like `plan`)."""
        from muxtui.engine.core import Engine

        assert isinstance(self, Engine)
        target = (await self.plan(model))[0]
        if not target.local:
            return remote_identity(target)
        path = next((e.path for e in self.servers.entries() if e.name == target.name), "")
        if not path:
            return f"local:{target.name}"
        try:
            real = os.path.realpath(path)
            stat = os.stat(real)
        except OSError:
            return f"local:{target.name}:{path}"
        if not os.path.isfile(real):  # a model folder (MLX): its path and when it changed
            return f"local-dir:{real}:{stat.st_mtime_ns}"
        known = (real, stat.st_size, stat.st_mtime_ns)
        identity = self._file_identities.get(known)
        if identity is None:
            try:
                identity = await asyncio.to_thread(file_identity, real)
            except OSError:
                return f"local:{target.name}:{real}"
            self._file_identities[known] = identity
        return identity

    async def _close_cache(self) -> None:
        """Finish the cache's pending writes and close it (if it was opened)."""
        cache = self.__dict__.get("response_cache")
        if cache is not None:
            await cache.aclose()
