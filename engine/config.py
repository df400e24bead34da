"""The config file: typed settings, validated on load, saved atomically with mode 0600.

The shape is a contract (DESIGN.md): `[providers.NAME]`, `[models.NAME]`, `[local.NAME]`,
`[cache]`, `[response_cache]`, `[monitor]`, `[serve]`,
plus `[network]` and `[ui]`. Every field carries a one-line doc in its
metadata.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from muxtui.engine.config_load import ConfigInvalid, check_references, convert, line_of
from muxtui.engine.errors import ConfigError

if TYPE_CHECKING:
    pass


def _doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line doc."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class ProviderConfig:
    """A remote (or already running) API that speaks one wire protocol."""

    kind: Literal["openai", "ollama"] = _doc(
        "Wire protocol: OpenAI-compatible or Ollama.", "openai"
    )
    base_url: str | list[str] = _doc("One base URL, or several hosts serving the same models.", "")
    api_key_env: str = _doc("Environment variable holding the API key.", "")
    api_key: str = _doc("The API key itself (prefer api_key_env); never printed.", "")
    headers: dict[str, str] = _doc("Extra HTTP headers sent with every request.", factory=dict)
    max_connections: int = _doc("Connection limit for this provider; 0 = [network] default.", 0)

    @property
    def urls(self) -> list[str]:
        """The base URLs as a list, trailing slashes removed."""
        raw = [self.base_url] if isinstance(self.base_url, str) else self.base_url
        return [url.rstrip("/") for url in raw if url]

    def resolved_api_key(self) -> str:
        """The API key from the environment variable, else from the file, else empty."""
        if self.api_key_env and os.environ.get(self.api_key_env):
            return os.environ[self.api_key_env]
        return self.api_key


@dataclass
class ModelConfig:
    """A named model served by a provider."""

    provider: str = _doc("Name of a [providers] entry.", "")
    id: str = _doc("The provider's own model id; defaults to the name.", "")
    fallbacks: list[str] = _doc("Models tried in order when this one fails.", factory=list)
    context: int = _doc(
        "Context window in tokens; 0 = learn it from the provider. The smaller one wins.", 0
    )


@dataclass
class LocalModelConfig:
    """A local model server that muxtui starts and keeps warm."""

    cmd: str = _doc("Command template with {path}, {port}, {host}; default: llama-server.", "")
    path: str = _doc("Model file passed as {path}.", "")
    ttl: int = _doc("Seconds idle before unload; 0 = never; -1 = [cache] ttl.", -1)
    pin: bool = _doc("Never evict this server.", False)
    health: str = _doc("Readiness path polled until it answers 200.", "/health")
    env: dict[str, str] = _doc("Extra environment variables for the server.", factory=dict)
    memory_gb: float = _doc("Expected memory use; 0 = estimate from the file size.", 0.0)
    context: int = _doc(
        "Context window in tokens; 0 = ask the server (llama-server reports its -c). "
        "The smaller one wins.",
        0,
    )


@dataclass
class CacheConfig:
    """How many local servers stay warm and for how long."""

    max_models: int = _doc("Warm local servers at once.", 2)
    memory_budget_gb: float = _doc("Memory all warm servers may use; 0 = no limit.", 0.0)
    ttl: int = _doc("Default seconds idle before a local server is unloaded; 0 = never.", 600)
    model_dirs: list[str] = _doc("Extra folders scanned for *.gguf files.", factory=list)
    stall_timeout: float = _doc("Seconds of start-up with no log output before giving up.", 120.0)
    start_timeout: float = _doc(
        "Seconds a local server may take to become ready, however much it logs; 0 = no limit.",
        300.0,
    )
    stop_grace: float = _doc("Seconds between SIGTERM and SIGKILL when stopping.", 10.0)


@dataclass
class NetworkConfig:
    """Connection pooling, timeouts and retries for every provider."""

    max_connections: int = _doc("Open connections per endpoint.", 10)
    max_keepalive: int = _doc("Idle connections kept per endpoint.", 10)
    connect_timeout: float = _doc("Seconds to open a connection.", 5.0)
    read_timeout: float = _doc("Seconds to wait for the next bytes of a reply.", 300.0)
    retries: int = _doc("Attempts after the first for connect errors, 429 and 5xx.", 3)
    http2: bool = _doc("Use HTTP/2 where the server offers it.", True)
    discovery: bool = _doc(
        "Also find servers the config does not name (Ollama on :11434, a server on :8080, "
        "OPENROUTER_API_KEY/OPENAI_API_KEY), providers configured or not; false = config and "
        "model folders only.",
        True,
    )
    discovery_interval: float = _doc(
        "Seconds between looks for loopback servers started or stopped since; 0 = at start only.",
        30.0,
    )


@dataclass
class MonitorConfig:
    """How often memory, CPU and GPUs are sampled, where samples are logged, when to alert."""

    interval: float = _doc("Seconds between samples.", 1.0)
    log: str = _doc("JSONL file each sample is appended to; empty = off.", "")
    log_max_mb: float = _doc("Size at which the sample log is rotated (one old file kept).", 20.0)
    ram_available_pct: float = _doc("Alert when available RAM falls below this percentage.", 10.0)
    swap_in_mb_s: float = _doc("Alert when swapping in faster than this (MB/s, 10 s mean).", 1.0)
    leak_window_s: float = _doc("Idle seconds over which a server's memory trend is fitted.", 600.0)
    leak_mb: float = _doc("Alert when an idle server's RSS trend adds this much per window.", 128.0)
    self_growth_mb: float = _doc("Alert when muxtui's RSS grows this much over its start.", 200.0)
    vram_return_s: float = _doc("Seconds after a server stops by which its VRAM is free.", 10.0)
    gpu_temp_margin_c: float = _doc("Alert this many degrees C below a GPU's slowdown point.", 5.0)
    gpu_power_pct: float = _doc("Alert when a GPU draws this share of its power limit.", 95.0)


@dataclass
class ResponseCacheConfig:
    """Cached replies: exact-match on the canonical request, shared by chat, batch and serve."""

    backend: Literal["sqlite", "redis", "off"] = _doc(
        '"sqlite" (a file in the cache dir), "redis" (or Valkey; shared) or "off".', "sqlite"
    )
    url: str = _doc('Redis URL for backend = "redis".', "redis://127.0.0.1:6379/0")
    ttl: int = _doc("Seconds a cached reply is kept; 0 = until evicted by size.", 86400)
    max_mb: float = _doc("Size cap of the SQLite cache file; oldest replies go first.", 512.0)


@dataclass
class ServeConfig:
    """`muxtui serve`: the OpenAI-compatible endpoint in front of the engine."""

    host: str = _doc("Address to listen on; anything but loopback needs api_key_env.", "127.0.0.1")
    port: int = _doc("Port to listen on.", 8090)
    api_key_env: str = _doc(
        "Environment variable holding the key clients must send (Authorization: Bearer KEY).", ""
    )
    max_body_mb: float = _doc("Largest request body accepted; bigger ones get 413.", 32.0)
    max_connections: int = _doc(
        "Connections serve opens per upstream endpoint (a provider's own max_connections wins); "
        "as many as clients send at once, so serve is never the queue.",
        64,
    )
    history: bool = _doc("Record served chats in the history like the chat pane does.", False)


@dataclass
class UIConfig:
    """The TUI's saved choices."""

    theme: str = _doc("Theme name (ours in themes/, or a Textual built-in).", "muxtui-dark")
    last_model: str = _doc("Model the chat pane starts on.", "")
    keys: dict[str, str] = _doc("Key remaps: binding id = key.", factory=dict)


@dataclass
class Config:
    """All of muxtui's settings."""

    providers: dict[str, ProviderConfig] = _doc("Remote APIs by name.", factory=dict)
    models: dict[str, ModelConfig] = _doc("Named models on providers.", factory=dict)
    local: dict[str, LocalModelConfig] = _doc("Local servers muxtui starts.", factory=dict)
    cache: CacheConfig = _doc("Warm-server limits.", factory=CacheConfig)
    network: NetworkConfig = _doc("Pooling, timeouts, retries.", factory=NetworkConfig)
    monitor: MonitorConfig = _doc("Sampling, sample log and alerts.", factory=MonitorConfig)
    response_cache: ResponseCacheConfig = _doc(
        "Cached replies (exact match).", factory=ResponseCacheConfig
    )
    serve: ServeConfig = _doc("The OpenAI-compatible endpoint.", factory=ServeConfig)
    ui: UIConfig = _doc("TUI choices.", factory=UIConfig)


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path, *, must_exist: bool = False) -> Config:
    """Read and validate the config file; a missing file means defaults unless `must_exist`."""
    elsewhere = "point --config or MUXTUI_CONFIG at"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(
                f"config error: {path} does not exist; create it or drop --config/MUXTUI_CONFIG"
            ) from None
        return Config()
    except IsADirectoryError:
        raise ConfigError(
            f"config error: {path} is a folder, not a file; {elsewhere} a config.toml file"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"config error: {path}: permission denied; make it readable (chmod u+r {path}) "
            f"or {elsewhere} another file"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config error: {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config error: {path}: cannot read it ({exc.strerror or type(exc).__name__}); "
            f"{elsewhere} a readable config.toml file"
        ) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate TOML text against the config shape."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        what = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        where = f" line {match.group(1)}" if match else ""
        raise ConfigError(f"config error: {path}{where}: {what}; fix the TOML syntax") from None
    try:
        config: Config = convert(Config, raw, ())
        check_references(config)
    except ConfigInvalid as exc:
        line = line_of(text, exc.key_path)
        where = f" line {line}" if line else ""
        what = exc.what
        if _SECRET_KEYS & set(exc.key_path):  # the value given may be a secret: never echo it
            what = what.split(", got ")[0]
        raise ConfigError(
            f"config error: {path}{where}: {'.'.join(exc.key_path)}: {what}"
        ) from None
    return config


_SECRET_KEYS = frozenset({"api_key", "headers", "env", "cmd"})


# --- saving ----------------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def masked(config: Config) -> dict[str, Any]:
    """Every resolved setting as a plain dict, for display, with every secret masked.

    Masked: API keys, every header value but the clearly public ones (`Accept`, `Content-Type`,
    `User-Agent`, `HTTP-Referer`, `Referer`, `X-Title`), every `[local]` env value (muxtui cannot
    tell which of them carry secrets), and the values of secret-looking cmd options.
    """
    from muxtui.engine.redact import MASK, mask_cmd, mask_headers

    plain = _to_plain(config)
    for name, provider in config.providers.items():
        entry = plain["providers"][name]
        if provider.api_key:
            entry["api_key"] = MASK
        if provider.api_key_env:
            state = "set" if os.environ.get(provider.api_key_env) else "not set"
            entry["api_key_env"] = f"{provider.api_key_env} ({state})"
        entry["headers"] = mask_headers(provider.headers)
    for name, local in config.local.items():
        entry = plain["local"][name]
        entry["cmd"] = mask_cmd(local.cmd)
        entry["env"] = dict.fromkeys(local.env, MASK)
    url = urlsplit(config.response_cache.url)
    if url.password:  # redis://user:PASSWORD@host
        netloc = url.netloc.replace(f":{url.password}@", f":{MASK}@")
        plain["response_cache"]["url"] = urlunsplit(url._replace(netloc=netloc))
    return typing.cast(dict[str, Any], plain)
