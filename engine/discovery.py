"""Finding providers nobody configured: API keys in the environment and servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from muxtui.engine.backends.base import Backend, Endpoint
from muxtui.engine.backends.ollama import OllamaBackend, ollama_root
from muxtui.engine.backends.openai import OpenAIBackend
from muxtui.engine.config import Config, ProviderConfig
from muxtui.engine.pool import ClientPool
from muxtui.engine.retry import ATTEMPT_FAILURES
from muxtui.engine.router import DiscoveredModel

log = logging.getLogger("muxtui.engine.discovery")

_PROBE_ERRORS = (*ATTEMPT_FAILURES, OSError)


@dataclass(frozen=True)
class DiscoveryTargets:
    """Where discovery looks; tests point these at loopback test servers."""

    ollama_url: str = "http://127.0.0.1:11434"
    openai_compatible_url: str = "http://127.0.0.1:8080/v1"
    openrouter_url: str = "https://openrouter.ai/api/v1"
    openai_url: str = "https://api.openai.com/v1"
    probe_timeout: float = 0.5  # a local server that is there answers at once
    catalog_timeout: float = 10.0
    fetch_catalogs: bool = True  # list the models of providers with an API key


@dataclass(frozen=True)
class Discovered:
    """What discovery found so far."""

    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: tuple[DiscoveredModel, ...] = ()


_KEYED_PROVIDERS = (
    ("openrouter", "OPENROUTER_API_KEY", "openrouter_url"),
    ("openai", "OPENAI_API_KEY", "openai_url"),
)


async def discover(
    config: Config,
    pool: ClientPool,
    publish: Callable[[Discovered], None],
    targets: DiscoveryTargets | None = None,
    environ: Mapping[str, str] | None = None,
) -> Discovered:
    """Probe loopback servers and read API keys, publish, then list remote catalogs."""
    targets = targets or DiscoveryTargets()
    environ = os.environ if environ is None else environ
    configured_envs = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    configured_roots = {
        ollama_root(url) for provider in config.providers.values() for url in provider.urls
    }

    providers: dict[str, ProviderConfig] = {}
    for name, env, attr in _KEYED_PROVIDERS:
        if environ.get(env) and env not in configured_envs and name not in config.providers:
            providers[name] = ProviderConfig(
                kind="openai", base_url=getattr(targets, attr), api_key_env=env
            )

    probes: list[tuple[str, ProviderConfig]] = []
    if ollama_root(targets.ollama_url) not in configured_roots:
        probes.append(("ollama", ProviderConfig(kind="ollama", base_url=targets.ollama_url)))
    if ollama_root(targets.openai_compatible_url) not in configured_roots:
        probes.append(
            ("local-8080", ProviderConfig(kind="openai", base_url=targets.openai_compatible_url))
        )
    probes = [(name, p) for name, p in probes if name not in config.providers]
    answers = await asyncio.gather(
        *(_probe(name, provider, pool, targets.probe_timeout, environ) for name, provider in probes)
    )
    models: list[DiscoveredModel] = []
    for (name, provider), found in zip(probes, answers, strict=True):
        if found is not None:
            providers[name] = provider
            models.extend(found)
    found_so_far = Discovered(dict(providers), tuple(models))
    publish(found_so_far)
    if not targets.fetch_catalogs:
        return found_so_far

    probed = {name for name, _ in probes}
    catalog_sources = {
        name: provider
        for name, provider in {**providers, **config.providers}.items()
        if name not in probed and (_api_key(provider, environ) or not provider.api_key_env)
    }
    configured_ids = {(m.provider, m.id or name) for name, m in config.models.items()}
    catalogs = await asyncio.gather(
        *(
            _catalog(name, provider, pool, targets.catalog_timeout, environ)
            for name, provider in catalog_sources.items()
        )
    )
    for found in catalogs:
        models.extend(m for m in found if (m.provider, m.model_id) not in configured_ids)
    result = Discovered(dict(providers), tuple(models))
    publish(result)
    return result


def _api_key(provider: ProviderConfig, environ: Mapping[str, str]) -> str:
    """The provider's key, read from `environ` rather than always from the process."""
    if provider.api_key_env and environ.get(provider.api_key_env):
        return environ[provider.api_key_env]
    return provider.api_key


def _backend(
    name: str, provider: ProviderConfig, pool: ClientPool, environ: Mapping[str, str]
) -> Backend:
    url = provider.urls[0]
    endpoint = Endpoint(
        provider=name,
        base_url=url,
        api_key=_api_key(provider, environ),
        api_key_env=provider.api_key_env,
        headers=provider.headers,
    )
    client = pool.client(url, provider.max_connections)
    if provider.kind == "ollama":
        return OllamaBackend(client, endpoint)
    return OpenAIBackend(client, endpoint)


async def _probe(
    name: str,
    provider: ProviderConfig,
    pool: ClientPool,
    timeout: float,
    environ: Mapping[str, str],
) -> list[DiscoveredModel] | None:
    """The models of a loopback server, or None if it did not answer in time."""
    backend = _backend(name, provider, pool, environ)
    try:
        ids = await backend.list_models(timeout=timeout)
    except _PROBE_ERRORS as exc:
        log.debug("discovery: %s at %s: %r", name, provider.urls[0], exc)
        return None
    loaded: dict[str, str] = {}
    if backend.lists_loaded_models:
        try:
            for model in await backend.loaded_models(timeout=timeout):
                expiry = f", unloads at {model.expires_at}" if model.expires_at else ""
                loaded[model.name] = f"loaded{expiry}"
        except _PROBE_ERRORS as exc:
            log.debug("discovery: %s loaded models: %r", name, exc)
    source = "ollama" if provider.kind == "ollama" else "discovered"
    return [DiscoveredModel(name, i, source, detail=loaded.get(i, "")) for i in ids]


async def _catalog(
    name: str,
    provider: ProviderConfig,
    pool: ClientPool,
    timeout: float,
    environ: Mapping[str, str],
) -> list[DiscoveredModel]:
    """A provider's model list; empty if it cannot be had."""
    try:
        ids = await _backend(name, provider, pool, environ).list_models(timeout=timeout)
    except _PROBE_ERRORS as exc:
        log.debug("discovery: catalog of %s: %r", name, exc)
        return []
    return [DiscoveredModel(name, model_id) for model_id in ids]
