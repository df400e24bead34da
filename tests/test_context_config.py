"""The optional `context` of [models] and [local] entries: parsed, documented, checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from muxtui.engine.config import LocalModelConfig, ModelConfig, load_config
from tests.test_config import _assert_one_line_error, _run_config


def _doc(cls: type, name: str) -> str:
    """The one-line doc a config field carries in its metadata."""
    return next(str(f.metadata["doc"]) for f in dataclasses.fields(cls) if f.name == name)


CONFIG = """
[providers.box]
base_url = "http://127.0.0.1:9/v1"

[models.small]
provider = "box"
context = 8192

[local.tiny]
path = "tiny.gguf"
context = 1024
"""


def test_context_is_read_and_documented(write_config: Callable[[str], Path]) -> None:
    config = load_config(write_config(CONFIG))
    assert config.models["small"].context == 8192
    assert config.local["tiny"].context == 1024
    assert ModelConfig().context == LocalModelConfig().context == 0
    assert "0 = learn it from the provider" in _doc(ModelConfig, "context")
    assert "llama-server reports its -c" in _doc(LocalModelConfig, "context")


def test_a_negative_context_is_one_line_exit_2(write_config: Callable[[str], Path]) -> None:
    text = CONFIG.replace("context = 1024", "context = -1")
    path = write_config(text)
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} line 11: local.tiny.context: expected 0 (ask the server) or tokens",
    )
    assert path.read_text() == text
