"""The config contract: shape, round trip, atomic private saves and one-line errors."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.config import (
    Config,
    ProviderConfig,
    load_config,
    masked,
)
from muxtui.engine.config_file import update_config_file
from muxtui.engine.errors import ConfigError
from tests.conftest import MUXTUI, muxtui_env

DESIGN_EXAMPLE = """
[providers.openrouter]            # any name
kind = "openai"                   # "openai" (OpenAI-compatible) or "ollama"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"

[providers.gpu-box]
kind = "openai"
base_url = ["http://10.0.0.5:8080/v1", "http://10.0.0.6:8080/v1"]   # one or several

[models."llama-3.1-8b"]           # a model served by a provider
provider = "gpu-box"
id = "llama-3.1-8b-instruct"      # the provider's own model id; defaults to the name
fallbacks = ["openrouter:meta-llama/llama-3.1-8b-instruct"]

[local."qwen3-30b"]               # a local server that muxtui starts and keeps warm
cmd = "llama-server -m {path} --port {port} -ngl 999 -c 4096"
path = "~/models/qwen3-30b-q4_k_m.gguf"
ttl = 600                         # seconds idle before unload; 0 = never
pin = false

[cache]
max_models = 2                    # warm local servers at once
memory_budget_gb = 20
"""


def test_design_example_loads(write_config: Callable[[str], Path]) -> None:
    config = load_config(write_config(DESIGN_EXAMPLE))
    assert config.providers["gpu-box"].urls == [
        "http://10.0.0.5:8080/v1",
        "http://10.0.0.6:8080/v1",
    ]
    assert config.providers["openrouter"].urls == ["https://openrouter.ai/api/v1"]
    assert config.models["llama-3.1-8b"].fallbacks == [
        "openrouter:meta-llama/llama-3.1-8b-instruct"
    ]
    assert config.local["qwen3-30b"].ttl == 600
    assert config.cache.memory_budget_gb == 20.0
    assert isinstance(config.cache.memory_budget_gb, float)


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml") == Config()


def test_saved_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    old_umask = os.umask(0o022)
    try:
        update_config_file(path, "ui", {"theme": "muxtui-light"})
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).ui.theme == "muxtui-light"


def test_crash_between_write_and_rename_keeps_old_file(tmp_path: Path) -> None:
    """A real process is killed after writing the temp file and before the rename."""
    path = tmp_path / "config.toml"
    update_config_file(path, "ui", {"theme": "old-theme"})
    before = path.read_bytes()
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import muxtui.engine.config_file as c\n"
        "def crash(src, dst):\n"
        "    os._exit(9)\n"  # dies exactly between the fsync'd write and the rename
        "c.os.replace = crash\n"
        "c.update_config_file(Path(sys.argv[1]), 'ui', {'theme': 'new-theme'})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=muxtui_env(), check=False
    )
    assert result.returncode == 9
    assert path.read_bytes() == before
    assert load_config(path).ui.theme == "old-theme"


def test_masked_hides_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_ENV", "sk-live-123456")
    config = Config(
        providers={
            "a": ProviderConfig(base_url="http://127.0.0.1:9", api_key="sk-file-abcdef"),
            "b": ProviderConfig(base_url="http://127.0.0.1:9", api_key_env="SECRET_ENV"),
        }
    )
    text = repr(masked(config))
    assert "sk-file-abcdef" not in text
    assert "sk-live-123456" not in text
    assert "SECRET_ENV (set)" in text


def test_every_field_has_a_doc() -> None:
    from muxtui.engine import config as config_module

    for cls in (
        config_module.ProviderConfig,
        config_module.ModelConfig,
        config_module.LocalModelConfig,
        config_module.CacheConfig,
        config_module.NetworkConfig,
        config_module.UIConfig,
        config_module.Config,
    ):
        docs = [f.metadata.get("doc") for f in dataclasses.fields(cls)]
        assert docs and all(docs), cls


# --- bad input: one line, exit 2, no traceback, file untouched --------------------------------


def _run_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(path), "config"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [expected]
    assert "Traceback" not in result.stderr


def test_toml_syntax_error(write_config: Callable[[str], Path]) -> None:
    text = "[cache]\nmax_models = 2\nmemory_budget_gb = = 3\n"
    path = write_config(text)
    result = _run_config(path)
    _assert_one_line_error(
        result, f"config error: {path} line 3: Invalid value; fix the TOML syntax"
    )
    assert path.read_text() == text


def test_wrong_type(write_config: Callable[[str], Path]) -> None:
    path = write_config('[cache]\nmax_models = "two"\n')
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} line 2: cache.max_models: expected an integer, got 'two'",
    )


def test_wrong_literal(write_config: Callable[[str], Path]) -> None:
    path = write_config('[providers.x]\nkind = "grpc"\nbase_url = "http://127.0.0.1:1"\n')
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} line 2: providers.x.kind: "
        'expected "openai" or "ollama", got \'grpc\'',
    )


def test_unknown_key(write_config: Callable[[str], Path]) -> None:
    path = write_config("[cache]\nmax_models = 2\nmax_modles = 3\n")
    result = _run_config(path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"config error: {path} line 3: cache.max_modles: unknown key; expected one of: "
    )
    assert "max_models" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_unknown_top_level_table(write_config: Callable[[str], Path]) -> None:
    path = write_config('[provider.x]\nkind = "openai"\n')
    result = _run_config(path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"config error: {path} line 1: provider: unknown key;")


def test_model_with_unknown_provider(write_config: Callable[[str], Path]) -> None:
    path = write_config('[models.m]\nprovider = "nowhere"\n')
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} line 2: models.m.provider: no provider named 'nowhere'; "
        "add [providers.nowhere]",
    )


def test_local_without_port_placeholder(write_config: Callable[[str], Path]) -> None:
    path = write_config('[local.q]\ncmd = "llama-server -m x.gguf"\n')
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} line 2: local.q.cmd: must contain {{port}} so muxtui can "
        "pick a free port",
    )


def test_config_option_pointing_at_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path} does not exist; create it or drop --config/MUXTUI_CONFIG",
    )
    assert not path.exists()


def test_config_env_var_pointing_at_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = subprocess.run(
        [*MUXTUI, "config"],
        capture_output=True,
        text=True,
        env=muxtui_env(MUXTUI_CONFIG=str(path)),
        check=False,
    )
    _assert_one_line_error(
        result, f"config error: {path} does not exist; create it or drop --config/MUXTUI_CONFIG"
    )


def test_config_command_masks_keys(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        '[providers.p]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-very-secret"\n'
    )
    result = _run_config(path)
    assert result.returncode == 0, result.stderr
    assert f"# config file: {path}" in result.stdout
    assert "sk-very-secret" not in result.stdout
    assert 'api_key = "****"' in result.stdout
    assert "max_models = 2" in result.stdout


def test_default_config_path_is_in_platform_dir(isolated_home: Path) -> None:
    result = subprocess.run(
        [*MUXTUI, "config", "--path"], capture_output=True, text=True, env=muxtui_env(), check=True
    )
    assert result.stdout.strip() == str(isolated_home / ".config" / "muxtui" / "config.toml")


def test_error_raises_config_error_type(write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError):
        load_config(write_config("[cache\n"))


def test_ui_update_keeps_comments_and_other_tables(write_config: Callable[[str], Path]) -> None:
    from muxtui.engine.config_file import update_config_file

    text = (
        "# my providers\n[providers.p]  # the box under the desk\n"
        'base_url = "http://127.0.0.1:9/v1"\n\n[ui]\ntheme = "muxtui-dark"  # dark at night\n'
    )
    path = write_config(text)
    update_config_file(path, "ui", {"theme": "muxtui-light", "last_model": "p:x"})
    updated = path.read_text()
    assert "# my providers" in updated and "# the box under the desk" in updated
    config = load_config(path)
    assert config.ui.theme == "muxtui-light" and config.ui.last_model == "p:x"
    assert config.providers["p"].urls == ["http://127.0.0.1:9/v1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ui_update_refuses_to_clobber_a_broken_file(write_config: Callable[[str], Path]) -> None:
    from muxtui.engine.config_file import update_config_file

    path = write_config("[ui\ntheme = 1\n")
    with pytest.raises(ConfigError, match="not saved"):
        update_config_file(path, "ui", {"theme": "x"})
    assert path.read_text() == "[ui\ntheme = 1\n"


def test_new_config_dir_is_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "config.toml"
    update_config_file(path, "ui", {"theme": "muxtui-dark"})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- unreadable files: what went wrong and what to do ------------------------------------------


def test_a_config_that_is_not_utf8_names_the_fix(write_config: Callable[[str], Path]) -> None:
    path = write_config("")
    path.write_bytes(b'[ui]\ntheme = "caf\xe9"\n')
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path}: not UTF-8 text (byte 0xe9 at offset 17); save it as UTF-8",
    )


def test_a_config_path_that_is_a_folder_names_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "config.toml"
    folder.mkdir()
    _assert_one_line_error(
        _run_config(folder),
        f"config error: {folder} is a folder, not a file; point --config or MUXTUI_CONFIG "
        "at a config.toml file",
    )


def test_a_config_below_a_file_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    path = blocker / "config.toml"
    _assert_one_line_error(
        _run_config(path),
        f"config error: {path}: cannot read it (Not a directory); point --config or "
        "MUXTUI_CONFIG at a readable config.toml file",
    )


def test_an_unreadable_config_names_the_fix(write_config: Callable[[str], Path]) -> None:
    from tests.conftest import permission_bits_enforced

    path = write_config("[cache]\nmax_models = 1\n")
    path.chmod(0o000)
    try:
        result = subprocess.run(
            [*permission_bits_enforced(), *MUXTUI, "--config", str(path), "config"],
            capture_output=True,
            text=True,
            env=muxtui_env(),
            check=False,
        )
    finally:
        path.chmod(0o600)
    _assert_one_line_error(
        result,
        f"config error: {path}: permission denied; make it readable (chmod u+r {path}) "
        "or point --config or MUXTUI_CONFIG at another file",
    )
