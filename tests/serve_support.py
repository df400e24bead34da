"""Helpers for the serve tests: configs in front of loopback servers, a running serve."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from muxtui.engine.config import Config, ModelConfig, NetworkConfig, ProviderConfig, ServeConfig
from muxtui.engine.retry import RetryPolicy

if TYPE_CHECKING:
    from muxtui.engine.paths import Paths
    from muxtui.engine.serve.observer import Observer
    from muxtui.engine.serve.server import Server

FAST = RetryPolicy(retries=6, base_delay=0.005, max_delay=0.02)
_VARYING = re.compile(rb'"(id|created)": ?("chatcmpl-fake-\d+"|\d+)')


def serve_config(base_url: str, *, dead_url: str = "", serve: ServeConfig | None = None) -> Config:
    """Provider `fake` at `base_url` with model `m`; with `dead_url`, a model `down` on it that
    falls back to `m`."""
    providers = {"fake": ProviderConfig(base_url=base_url)}
    models = {"m": ModelConfig(provider="fake", id="fake-model")}
    if dead_url:
        providers["dead"] = ProviderConfig(base_url=dead_url)
        models["down"] = ModelConfig(provider="dead", id="fake-model", fallbacks=["m"])
    return Config(
        providers=providers,
        models=models,
        network=NetworkConfig(discovery=False),
        serve=serve or ServeConfig(),
    )


def normal(data: bytes) -> bytes:
    """A reply with its per-reply id and timestamp blanked, to compare two replies' bytes."""
    return _VARYING.sub(rb'"\1": 0', data)


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_serve(
    config: Config,
    paths: Paths,
    *,
    key: str = "",
    policy: RetryPolicy = FAST,
    observer: Observer | None = None,
) -> AsyncIterator[Server]:
    """An engine and a serve over it on a free loopback port, closed after."""
    from muxtui.engine.core import Engine
    from muxtui.engine.serve.server import Server

    async with Engine(config, paths, discover=False, retry_policy=policy) as engine:
        server = Server(engine, "127.0.0.1", 0, key=key, observer=observer, monitor=False)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


class Recorder:
    """An observer that keeps every call, as (method, model, *arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def request_started(self, model: str) -> None:
        self.calls.append(("request_started", model))

    def first_byte(self, model: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(("first_byte", model))

    def token(self, model: str, gap_s: float) -> None:
        assert gap_s >= 0
        self.calls.append(("token", model))

    def finished(
        self, model: str, outcome: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        self.calls.append(("finished", model, outcome, prompt_tokens, completion_tokens))

    def cache(self, model: str, hit: bool) -> None:
        self.calls.append(("cache", model, hit))

    def fallback(self, model: str) -> None:
        self.calls.append(("fallback", model))

    def named(self, method: str) -> list[tuple[object, ...]]:
        return [call for call in self.calls if call[0] == method]
