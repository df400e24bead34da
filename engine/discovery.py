"""Finding providers nobody configured: servers on loopback and API keys in the environment.

Discovery runs beside the config, never instead of it, while `[network] discovery` is true (the
default): it probes Ollama on 127.0.0.1:11434 and an OpenAI-compatible server (llama-server,
vLLM, LM Studio...) on 127.0.0.1:8080 unless a configured provider already points there, adds
OpenRouter and OpenAI when their API key is in the environment and no configured provider uses
that key, and lists the models of every provider it can reach, configured ones included.
Configured names always win over discovered ones.

The loopback probes are cheap (a refused connection costs microseconds), so the engine repeats
them every `[network] discovery_interval` seconds: a server started after muxtui is found, and
one that stopped is dropped. Remote catalogs are listed at start and on `Engine.rediscover()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
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
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class DiscoveryTargets:
    """Where discovery looks; tests point these at loopback test servers on free ports."""

    ollama_url: str = "http://127.0.0.1:11434"
    openai_compatible_url: str = "http://127.0.0.1:8080/v1"
    openrouter_url: str = "https://openrouter.ai/api/v1"
    openai_url: str = "https://api.openai.com/v1"
    probe_timeout: float = 0.5  # a local server that is there answers at once
    catalog_timeout: float = 10.0
    fetch_catalogs: bool = True  # list the models of providers with an API key


@dataclass(frozen=True)
class Discovered:
    """What discovery found: providers, their models, and which providers answered."""

    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: tuple[DiscoveredModel, ...] = ()
    answered: dict[str, bool] = field(default_factory=dict)  # each provider asked: did it list?

    def merged(self, newer: Discovered) -> Discovered:
        """This result with `newer`'s findings for every provider `newer` asked about or added;
        `newer`'s models come first (the loopback probes are what is asked again)."""
        asked = set(newer.answered) | set(newer.providers)
        providers = {n: p for n, p in self.providers.items() if n not in asked}
        models = newer.models + tuple(m for m in self.models if m.provider not in asked)
        return Discovered(
            {**providers, **newer.providers}, models, {**self.answered, **newer.answered}
        )


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
    """Probe loopback servers and read API keys, publish, then list catalogs and publish all."""
    targets = targets or DiscoveryTargets()
    environ = os.environ if environ is None else environ
    loopback = await probe_loopback(config, pool, targets, environ)
    keyed = keyed_providers(config, targets, environ)
    found_so_far = Discovered({**loopback.providers, **keyed}, loopback.models, loopback.answered)
    publish(found_so_far)
    if not targets.fetch_catalogs:
        return found_so_far
    catalogs = await list_catalogs(config, pool, targets, keyed, environ)
    answered = {**loopback.answered, **catalogs.answered}
    result = Discovered(found_so_far.providers, loopback.models + catalogs.models, answered)
    publish(result)
    return result


def keyed_providers(
    config: Config, targets: DiscoveryTargets, environ: Mapping[str, str]
) -> dict[str, ProviderConfig]:
    """OpenRouter and OpenAI when their key is in `environ` and no configured provider uses it."""
    configured_envs = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    return {
        name: ProviderConfig(kind="openai", base_url=getattr(targets, attr), api_key_env=env)
        for name, env, attr in _KEYED_PROVIDERS
        if environ.get(env) and env not in configured_envs and name not in config.providers
    }


def _loopback_probes(config: Config, targets: DiscoveryTargets) -> list[tuple[str, ProviderConfig]]:
    """The loopback servers to probe: those no configured provider points at already."""
    configured_roots = {
        ollama_root(url) for provider in config.providers.values() for url in provider.urls
    }
    probes: list[tuple[str, ProviderConfig]] = []
    if ollama_root(targets.ollama_url) not in configured_roots:
        probes.append(("ollama", ProviderConfig(kind="ollama", base_url=targets.ollama_url)))
    if ollama_root(targets.openai_compatible_url) not in configured_roots:
        probes.append(
            ("local-8080", ProviderConfig(kind="openai", base_url=targets.openai_compatible_url))
        )
    return [(name, p) for name, p in probes if name not in config.providers]


async def probe_loopback(
    config: Config,
    pool: ClientPool,
    targets: DiscoveryTargets,
    environ: Mapping[str, str] | None = None,
) -> Discovered:
    """Ask Ollama's and the OpenAI-compatible loopback port for their models, at once."""
    environ = os.environ if environ is None else environ
    probes = _loopback_probes(config, targets)
    answers = await asyncio.gather(
        *(_probe(name, provider, pool, targets.probe_timeout, environ) for name, provider in probes)
    )
    providers: dict[str, ProviderConfig] = {}
    models: list[DiscoveredModel] = []
    for (name, provider), found in zip(probes, answers, strict=True):
        if found is not None:
            providers[name] = provider
            models.extend(found)
    answered = {name: found is not None for (name, _), found in zip(probes, answers, strict=True)}
    return Discovered(providers, tuple(models), answered)


async def list_catalogs(
    config: Config,
    pool: ClientPool,
    targets: DiscoveryTargets,
    keyed: Mapping[str, ProviderConfig],
    environ: Mapping[str, str] | None = None,
) -> Discovered:
    """The model lists of keyed and configured providers (those whose key is at hand)."""
    environ = os.environ if environ is None else environ
    probed = {name for name, _ in _loopback_probes(config, targets)}
    sources = {
        name: provider
        for name, provider in {**keyed, **config.providers}.items()
        if name not in probed and (_api_key(provider, environ) or not provider.api_key_env)
    }
    configured_ids = {(m.provider, m.id or name) for name, m in config.models.items()}
    catalogs = await asyncio.gather(
        *(
            _catalog(name, provider, pool, targets.catalog_timeout, environ)
            for name, provider in sources.items()
        )
    )
    models: list[DiscoveredModel] = []
    for found in catalogs:
        models.extend(m for m in found or () if (m.provider, m.model_id) not in configured_ids)
    answered = {name: found is not None for name, found in zip(sources, catalogs, strict=True)}
    return Discovered({}, tuple(models), answered)


async def provider_answers(
    name: str,
    provider: ProviderConfig,
    pool: ClientPool,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Whether the provider lists its models within `timeout` (its key accepted)."""
    environ = os.environ if environ is None else environ
    return await _catalog(name, provider, pool, timeout, environ) is not None


def is_loopback(provider: ProviderConfig) -> bool:
    """Whether every URL of the provider is on this machine (127.0.0.1, localhost, ::1)."""
    hosts = {urllib.parse.urlsplit(url).hostname for url in provider.urls}
    return bool(hosts) and hosts <= _LOOPBACK_HOSTS


def _api_key(provider: ProviderConfig, environ: Mapping[str, str]) -> str:
    """The provider's key, read from `environ` rather than always from the process."""
    if provider.api_key_env and environ.get(provider.api_key_env):
        return environ[provider.api_key_env]
    return provider.api_key


def _backend(
    name: str,
    provider: ProviderConfig,
    pool: ClientPool,
    environ: Mapping[str, str],
    url: str = "",
) -> Backend:
    url = url or provider.urls[0]
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
    knows_loaded = backend.lists_loaded_models
    return [
        DiscoveredModel(
            name,
            i,
            source,
            detail=loaded.get(i, ""),
            loaded=(i in loaded) if knows_loaded else None,
        )
        for i in ids
    ]


async def _catalog(
    name: str,
    provider: ProviderConfig,
    pool: ClientPool,
    timeout: float,
    environ: Mapping[str, str],
) -> list[DiscoveredModel] | None:
    """A provider's model list from the first of its URLs that answers; None if none does."""
    for url in provider.urls:  # one host of several being down does not make the model unusable
        try:
            ids = await _backend(name, provider, pool, environ, url).list_models(timeout=timeout)
        except _PROBE_ERRORS as exc:
            log.debug("discovery: catalog of %s at %s: %r", name, url, exc)
            continue
        return [DiscoveredModel(name, model_id) for model_id in ids]
    return None
