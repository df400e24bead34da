"""llama-server's command line, read into `FitParams` (and the flags muxtui recommends)."""

from __future__ import annotations

from collections.abc import Sequence

from muxtui.engine.fit.estimate import KV_TYPES, FitParams

_CTX = ("-c", "--ctx-size")
_PARALLEL = ("-np", "--parallel")
_NGL = ("-ngl", "--gpu-layers", "--n-gpu-layers")
_UBATCH = ("-ub", "--ubatch-size")
_CACHE_K = ("-ctk", "--cache-type-k")
_CACHE_V = ("-ctv", "--cache-type-v")
_CACHE_RAM = ("-cram", "--cache-ram")
_CHECKPOINTS = ("-ctxcp", "--ctx-checkpoints", "--swa-checkpoints")
# What a recommendation sets: options with a value, and switches. Applying one replaces every
# spelling of these in a command, so none is left twice or contradicting the new ones.
RECOMMENDED_OPTIONS = frozenset(
    _CTX + _PARALLEL + _NGL + _CACHE_K + _CACHE_V + _CACHE_RAM + _CHECKPOINTS
)
RECOMMENDED_SWITCHES = frozenset(
    {"-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified", "--swa-full"}
)


def params_from_argv(argv: Sequence[str]) -> FitParams:
    """The memory-relevant settings of a llama-server command line (defaults where unset).

    Unset `-c` means the model's own context (0) and unset `-np` means auto (0), as in
    llama-server itself.
    """
    numbers: dict[str, int] = {"ctx": 0, "parallel": 0, "ngl": -1}
    words: dict[str, str] = {}
    switches: dict[str, bool] = {}
    tokens = list(argv)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name, _, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        following = inline or (tokens[index + 1] if index + 1 < len(tokens) else "")
        step = 1 if inline else 2
        if name in _CTX:
            numbers["ctx"] = _int(following, 0)
        elif name in _PARALLEL:
            numbers["parallel"] = max(0, _int(following, 0))
        elif name in _NGL:
            numbers["ngl"] = -1 if following in ("all", "auto") else _int(following, -1)
        elif name in _UBATCH:
            numbers["n_ubatch"] = _int(following, 512)
        elif name in _CACHE_K and following in KV_TYPES:
            words["cache_type_k"] = following
        elif name in _CACHE_V and following in KV_TYPES:
            words["cache_type_v"] = following
        elif name in _CACHE_RAM:
            numbers["cache_ram_mib"] = _int(following, 8192)
        elif name in _CHECKPOINTS:
            numbers["ctx_checkpoints"] = _int(following, 32)
        else:
            step = 1
            if name in ("--swa-full",):
                switches["swa_full"] = True
            elif name in ("-kvu", "--kv-unified"):
                switches["kv_unified"] = True
            elif name in ("-no-kvu", "--no-kv-unified"):
                switches["kv_unified"] = False
            elif name in ("-nr", "--no-repack"):
                switches["repack"] = False
            elif name == "--no-mmap":
                switches["mmap"] = False
            elif name in ("-lm", "--load-mode"):
                switches["mmap"] = "mmap" in following or following == "auto"
                step = 2
        index += step
    if numbers["ngl"] > 998:  # "-ngl 999" is the usual way to say "all"
        numbers["ngl"] = -1
    return FitParams(
        ctx=numbers["ctx"],
        parallel=numbers["parallel"],
        ngl=numbers["ngl"],
        n_ubatch=numbers.get("n_ubatch", 512),
        cache_ram_mib=numbers.get("cache_ram_mib", 8192),
        ctx_checkpoints=numbers.get("ctx_checkpoints", 32),
        cache_type_k=words.get("cache_type_k", "f16"),
        cache_type_v=words.get("cache_type_v", "f16"),
        swa_full=switches.get("swa_full", False),
        kv_unified=switches.get("kv_unified"),
        repack=switches.get("repack", True),
        mmap=switches.get("mmap", True),
    )


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
