"""From a model name to where a request goes: provider, endpoints, fallbacks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from muxtui.engine.backends.base import Endpoint
from muxtui.engine.config import Config, ProviderConfig
from muxtui.engine.errors import UnknownModelError
from muxtui.engine.retry import EndpointHealth


@dataclass(frozen=True)
class Target:
    """A resolved model: a provider model on one or more endpoints, or a local server."""

    name: str  # the name asked for
    provider: str  # provider name, or "local" for a server muxtui starts
    kind: str  # wire protocol: "openai" or "ollama"
    model_id: str  # the provider's own id
    endpoints: tuple[Endpoint, ...] = ()  # empty for local servers (known once started)
    local: bool = False
    max_connections: int = 0
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiscoveredModel:
    """A model a reachable provider offers, found without being configured."""

    provider: str
    model_id: str
    source: str = "discovered"  # "discovered" or "ollama"
    size_bytes: int = 0
    detail: str = ""
    loaded: bool | None = None  # in memory now (Ollama tells); None where the server doesn't say

    @property
    def name(self) -> str:
        """The name `--model` accepts: `PROVIDER:ID`."""
        return f"{self.provider}:{self.model_id}"


class Router:
    """Resolves names against the config, local servers and discovery; picks endpoints."""

    def __init__(self, config: Config, has_local: Callable[[str], bool]) -> None:
        self._config = config
        self._has_local = has_local
        self._discovered_providers: dict[str, ProviderConfig] = {}
        self._discovered_models: tuple[DiscoveredModel, ...] = ()
        self._by_name: dict[str, DiscoveredModel] = {}
        self._health: dict[str, EndpointHealth] = {}
        self._turns = itertools.count()

    # --- what is known -----------------------------------------------------------------------

    def update_discovered(
        self, providers: Mapping[str, ProviderConfig], models: Sequence[DiscoveredModel]
    ) -> None:
        """Replace what discovery found; configured names always win over discovered ones."""
        self._discovered_providers = {
            name: provider
            for name, provider in providers.items()
            if name not in self._config.providers
        }
        self._discovered_models = tuple(models)
        self._by_name = {model.name: model for model in self._discovered_models}

    @property
    def discovered_models(self) -> tuple[DiscoveredModel, ...]:
        """Models found on reachable providers."""
        return self._discovered_models

    def providers(self) -> dict[str, ProviderConfig]:
        """Configured providers, then discovered ones."""
        return {**self._discovered_providers, **self._config.providers}

    def known_names(self) -> list[str]:
        """Every name that resolves, for error hints."""
        names = [*self._config.models, *self._config.local]
        names += [model.name for model in self._discovered_models]
        return list(dict.fromkeys(names))

    # --- resolution --------------------------------------------------------------------------

    def resolve(self, name: str) -> Target:
        """The target for one model name; `UnknownModelError` if nothing matches."""
        config = self._config
        model = config.models.get(name)
        if model is not None:
            return self._provider_target(
                name, model.provider, model.id or name, tuple(model.fallbacks)
            )
        if name in config.local or self._has_local(name):
            return Target(name=name, provider="local", kind="openai", model_id=name, local=True)
        discovered = self._by_name.get(name)
        if discovered is not None:
            return self._provider_target(name, discovered.provider, discovered.model_id)
        provider_name, colon, model_id = name.partition(":")
        if colon and model_id and provider_name in self.providers():
            return self._provider_target(name, provider_name, model_id)
        same_id = [model for model in self._discovered_models if model.model_id == name]
        if len(same_id) == 1:
            return self._provider_target(name, same_id[0].provider, name)
        raise UnknownModelError(name, self.known_names())

    def plan(self, name: str) -> list[Target]:
        """The target for `name`, then its resolvable fallbacks; cooling targets go last."""
        primary = self.resolve(name)
        targets = [primary]
        seen = {primary.name}
        for fallback in primary.fallbacks:
            if fallback in seen:
                continue
            seen.add(fallback)
            try:
                targets.append(self.resolve(fallback))
            except UnknownModelError:
                continue  # a stale fallback must not hide the primary's own error
        if len(targets) > 1:
            now = time.monotonic()
            targets.sort(key=lambda target: self.all_cooling(target, now))
        return targets

    def _provider_target(
        self, name: str, provider_name: str, model_id: str, fallbacks: tuple[str, ...] = ()
    ) -> Target:
        provider = self.providers()[provider_name]
        api_key = provider.resolved_api_key()
        endpoints = tuple(
            Endpoint(
                provider=provider_name,
                base_url=url,
                api_key=api_key,
                api_key_env=provider.api_key_env,
                headers=provider.headers,
            )
            for url in provider.urls
        )
        return Target(
            name=name,
            provider=provider_name,
            kind=provider.kind,
            model_id=model_id,
            endpoints=endpoints,
            max_connections=provider.max_connections,
            fallbacks=fallbacks,
        )

    # --- endpoint choice ---------------------------------------------------------------------

    def health(self, base_url: str) -> EndpointHealth:
        """The health record of one endpoint."""
        health = self._health.get(base_url)
        if health is None:
            health = self._health[base_url] = EndpointHealth()
        return health

    def all_cooling(self, target: Target, now: float | None = None) -> bool:
        """Whether every endpoint of a remote target is on cooldown."""
        if target.local or not target.endpoints:
            return False
        now = time.monotonic() if now is None else now
        return all(self.health(e.base_url).cooling(now) for e in target.endpoints)

    def pick(self, target: Target) -> Endpoint:
        """The endpoint with the fewest requests in flight, skipping cooling ones if it can."""
        endpoints = target.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        candidates = [e for e in endpoints if not self.health(e.base_url).cooling(now)]
        candidates = candidates or list(endpoints)
        start = next(self._turns) % len(candidates)  # rotation breaks ties: round-robin
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda e: self.health(e.base_url).in_flight)
