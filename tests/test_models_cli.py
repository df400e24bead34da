"""`muxtui models [--json]` as a person runs it: a real subprocess with its own config."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env

CONFIG = """
[network]
discovery = false

[providers.gpu-box]
base_url = "http://127.0.0.1:9/v1"

[models."llama-3.1-8b"]
provider = "gpu-box"
id = "llama-3.1-8b-instruct"

[local."qwen"]
path = "{model}"
pin = true
"""


def run_models(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(config), "models", *args],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        timeout=60,
        check=False,
    )


def test_models_json_lists_configured_local_and_discovered(
    write_config: Callable[[str], Path], paths: Paths, tmp_path: Path
) -> None:
    model = tmp_path / "qwen.gguf"
    model.write_bytes(b"GGUF" + bytes(2044))
    paths.models_dir.mkdir(parents=True)
    (paths.models_dir / "found-model.gguf").write_bytes(b"GGUF" + bytes(60))
    result = run_models(write_config(CONFIG.format(model=model)), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        assert {"name", "provider", "local", "state", "path", "size_bytes", "port", "pid"} <= set(
            row
        )
    remote = by_name["llama-3.1-8b"]
    assert (remote["provider"], remote["local"], remote["state"]) == ("gpu-box", False, "remote")
    local = by_name["qwen"]
    assert (local["provider"], local["local"], local["state"]) == ("local", True, "cold")
    assert local["path"] == str(model) and local["size_bytes"] == 2048 and local["pinned"]
    found = by_name["found-model"]
    assert found["source"] == "discovered" and found["state"] == "cold"


def test_models_table(write_config: Callable[[str], Path], tmp_path: Path) -> None:
    model = tmp_path / "qwen.gguf"
    model.write_bytes(b"GGUF" + bytes(2044))
    result = run_models(write_config(CONFIG.format(model=model)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PROVIDER", "STATE", "SIZE", "PORT", "PID", "DETAIL"]
    qwen = next(line for line in lines if line.startswith("qwen "))
    assert qwen.split()[:4] == ["qwen", "local", "cold", "2.0"]
    assert "pinned" in qwen
    assert any(line.split()[:3] == ["llama-3.1-8b", "gpu-box", "remote"] for line in lines)


def test_models_with_a_bad_config_is_one_line_exit_2(write_config: Callable[[str], Path]) -> None:
    result = run_models(write_config('[local."x"]\ncmd = "llama-server -m {path}"\n'))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "must contain {port}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
