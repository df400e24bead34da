"""Learning each model's context window: from the server (llama-server's `/props`, Ollama's
`/api/ps` and `/api/show`), from the provider's model list (`context_length`), or from config.

Where the server reports the window it runs with, that is the truth; a model list tells what the
model can take; a config `context` caps both (a person may want to send less to a paid model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Imported before httpx on purpose: it keeps httpx's command line (and rich) unloaded.
from muxtui.engine.backends.base import Endpoint

# isort: split
import httpx

from muxtui.engine.backends.ollama import ollama_root

log = logging.getLogger(__name__)

# Ollama's context when nothing sets num_ctx: 4096 on machines with under 24 GiB of VRAM (more
# on bigger GPUs, or OLLAMA_CONTEXT_LENGTH); the smallest is the safe guess until it is loaded.
OLLAMA_DEFAULT_CONTEXT = 4096
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_PROBE_TIMEOUT = 5.0
_RETRY_UNKNOWN_S = 60.0  # a provider that did not say is asked again after this long
_RETRY_LOOPBACK_S = 2.0  # ... a server on this machine (a muxtui serve) sooner: asking is cheap


@dataclass(frozen=True)
class ModelRef:
    """The model a turn goes to, as the turn pipeline knows it once it picked an endpoint."""

    name: str  # what the person chose: a [models]/[local] name or PROVIDER:ID
    kind: str  # wire protocol: "openai" or "ollama"
    model_id: str  # the id the server knows
    endpoint: Endpoint


@dataclass(frozen=True)
class ContextWindow:
    """A model's context in tokens (None: unknown) and where that came from."""

    tokens: int | None
    # "server" (llama-server /props), "ollama" (/api/ps: loaded), "ollama-num_ctx",
    # "ollama-default" (a guess), "model-list", "config", "rejection" (a server said so when it
    # refused a request), "learned" (the tighter fit that went through), "unknown"
    source: str = "unknown"
    tokenizer: bool = False  # the server is a llama-server: it counts with `/tokenize`


UNKNOWN = ContextWindow(None)


def server_root(endpoint: Endpoint) -> str:
    """The server's root URL: an OpenAI-style `/v1` (or Ollama `/api`) suffix dropped."""
    return ollama_root(endpoint.base_url)


def is_loopback(endpoint: Endpoint) -> bool:
    """Whether the endpoint is a server on this machine (muxtui's own, or a probed one)."""
    return endpoint.local or (urlsplit(endpoint.base_url).hostname or "") in _LOOPBACK


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    headers.update(endpoint.headers)
    return headers


def listed_context(item: Mapping[str, Any]) -> int | None:
    """The context a model list entry carries (OpenRouter, vLLM, llama-server), if any."""
    top = item.get("top_provider")
    meta = item.get("meta")
    found = [
        _positive(item.get("context_length")),  # OpenRouter, many OpenAI-compatible servers
        _positive(top.get("context_length")) if isinstance(top, Mapping) else None,
        _positive(item.get("max_model_len")),  # vLLM
        _positive(meta.get("n_ctx")) if isinstance(meta, Mapping) else None,  # llama-server
    ]
    known = [tokens for tokens in found if tokens is not None]
    return min(known) if known else None


def _llama_meta(item: Mapping[str, Any]) -> bool:
    """Whether a model list entry is llama-server's, with the n_ctx it runs with."""
    meta = item.get("meta")
    return isinstance(meta, Mapping) and _positive(meta.get("n_ctx")) is not None


def ollama_num_ctx(parameters: object) -> int | None:
    """`num_ctx` from the parameters text of Ollama's `/api/show`."""
    if not isinstance(parameters, str):
        return None
    for line in parameters.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return _positive(int(value.strip()))
    return None


def ollama_trained_context(model_info: object) -> int | None:
    """`<architecture>.context_length` from the model_info of Ollama's `/api/show`."""
    if not isinstance(model_info, Mapping):
        return None
    architecture = model_info.get("general.architecture")
    return _positive(model_info.get(f"{architecture}.context_length"))


class WindowLookup:
    """Asks servers and providers for context windows, caching what they said per model."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], ContextWindow] = {}
        self._unknown_until: dict[tuple[str, str], float] = {}  # asked, unknown: ask after
        # base URL -> (when it was asked, model id -> (context, llama-server?)); None when it
        # did not answer
        self._listings: dict[str, tuple[float, dict[str, tuple[int, bool]] | None]] = {}

    def remember(self, ref: ModelRef, window: ContextWindow) -> None:
        """Keep a window learned elsewhere (from a rejection) for `ref`."""
        self._windows[(ref.name, ref.endpoint.base_url)] = window

    def forget(self, name: str) -> None:
        """Drop what is known about `name` (a server restarted with other settings)."""
        for key in [key for key in self._windows if key[0] == name]:
            del self._windows[key]
        for key in [key for key in self._unknown_until if key[0] == name]:
            del self._unknown_until[key]

    async def window(
        self, ref: ModelRef, client: httpx.AsyncClient, configured: int = 0
    ) -> ContextWindow:
        """The context window of `ref`, capped by a configured `context` (0 = none)."""
        key = (ref.name, ref.endpoint.base_url)
        reported = self._windows.get(key)
        if reported is None and self._unknown_until.get(key, 0.0) > time.monotonic():
            reported = UNKNOWN  # asked moments ago and nothing said: not on every turn
        if reported is None:
            try:
                reported = await self._ask(ref, client)
            except (httpx.HTTPError, ValueError) as exc:  # a probe never fails the turn
                log.debug("context window of %s: %r", ref.name, exc)
                reported = UNKNOWN
            if reported.tokens is not None and reported.source != "ollama-default":
                self._windows[key] = reported
            elif reported.tokens is None:
                retry = _RETRY_LOOPBACK_S if is_loopback(ref.endpoint) else _RETRY_UNKNOWN_S
                self._unknown_until[key] = time.monotonic() + retry
        if configured > 0 and (reported.tokens is None or configured < reported.tokens):
            return ContextWindow(configured, "config", reported.tokenizer)
        return reported

    async def _ask(self, ref: ModelRef, client: httpx.AsyncClient) -> ContextWindow:
        if ref.kind == "ollama":
            return await self._ask_ollama(ref, client)
        if is_loopback(ref.endpoint):
            n_ctx = await self._props_n_ctx(ref, client)
            if n_ctx is not None:
                return ContextWindow(n_ctx, "server", tokenizer=True)
        listed = (await self._listing(ref, client)).get(ref.model_id)
        if listed is None:
            return UNKNOWN
        tokens, llama = listed  # llama-server lists its running n_ctx: exact, and it tokenizes
        return ContextWindow(tokens, "server" if llama else "model-list", tokenizer=llama)

    async def _get_json(
        self, client: httpx.AsyncClient, url: str, endpoint: Endpoint, body: object = None
    ) -> Any:
        """JSON from a GET (or a POST of `body`); None for a non-200 answer or non-JSON."""
        headers = _headers(endpoint)
        if body is None:
            response = await client.get(url, headers=headers, timeout=_PROBE_TIMEOUT)
        else:
            response = await client.post(url, json=body, headers=headers, timeout=_PROBE_TIMEOUT)
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    async def _props_n_ctx(self, ref: ModelRef, client: httpx.AsyncClient) -> int | None:
        """llama-server's per-slot context from `/props`, None if it is not a llama-server."""
        props = await self._get_json(client, f"{server_root(ref.endpoint)}/props", ref.endpoint)
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        return _positive(settings.get("n_ctx")) if isinstance(settings, dict) else None

    async def _listing(
        self, ref: ModelRef, client: httpx.AsyncClient
    ) -> dict[str, tuple[int, bool]]:
        """Model id -> (context, llama-server?) from `/models`, fetched once per base URL."""
        base = ref.endpoint.base_url.rstrip("/")
        cached = self._listings.get(base)
        now = time.monotonic()
        # A listing is asked again after a while when it lacked this model (a muxtui serve lists
        # a local server's context only once that server runs).
        listed = cached is not None and cached[1] is not None and ref.model_id in cached[1]
        retry = _RETRY_LOOPBACK_S if is_loopback(ref.endpoint) else _RETRY_UNKNOWN_S
        if cached is not None and (listed or now - cached[0] < retry):
            return cached[1] or {}
        self._listings[base] = (now, None)
        listing = await self._get_json(client, f"{base}/models", ref.endpoint)
        items = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(items, list):
            return {}
        contexts = {
            str(item["id"]): (tokens, _llama_meta(item))
            for item in items
            if isinstance(item, dict) and "id" in item and (tokens := listed_context(item))
        }
        self._listings[base] = (now, contexts)
        return contexts

    async def _ask_ollama(self, ref: ModelRef, client: httpx.AsyncClient) -> ContextWindow:
        root = server_root(ref.endpoint)
        running = await self._get_json(client, f"{root}/api/ps", ref.endpoint)
        names = {ref.model_id, f"{ref.model_id}:latest"}
        for model in running.get("models", []) if isinstance(running, dict) else []:
            if isinstance(model, dict) and {model.get("name"), model.get("model")} & names:
                loaded = _positive(model.get("context_length"))
                if loaded is not None:
                    return ContextWindow(loaded, "ollama")
        show = await self._get_json(
            client, f"{root}/api/show", ref.endpoint, {"model": ref.model_id}
        )
        if not isinstance(show, dict):
            return UNKNOWN
        num_ctx = ollama_num_ctx(show.get("parameters"))
        if num_ctx is not None:
            return ContextWindow(num_ctx, "ollama-num_ctx")
        trained = ollama_trained_context(show.get("model_info"))
        guess = min(trained or OLLAMA_DEFAULT_CONTEXT, OLLAMA_DEFAULT_CONTEXT)
        return ContextWindow(guess, "ollama-default")
