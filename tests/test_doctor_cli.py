"""`muxtui doctor [--json]` as a person runs it: a real subprocess with its own config, real
model files (good, missing, not a GGUF) and real loopback providers."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MUXTUI, muxtui_env
from tests.fit_shapes import write_shape


def run_doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(config), "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=muxtui_env(),
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def doctor_config(tmp_path: Path, fake_server: Any) -> Path:
    model = write_shape("hybrid", tmp_path / "hybrid.gguf", scale=4)
    words = tmp_path / "readme.gguf"
    words.write_text("not weights at all\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[providers.loop]
kind = "openai"
base_url = "{fake_server.base_url}"

[providers.gone]
kind = "openai"
base_url = "http://127.0.0.1:{closed_port()}/v1"

[local.hybrid]
cmd = "llama-server -m {{path}} --port {{port}} -c 8192 -np 2 --cache-ram 512"
path = "{model}"

[local.missing]
path = "{tmp_path / "absent.gguf"}"

[local.words]
path = "{words}"
""",
        encoding="utf-8",
    )
    return config


def test_doctor_json_shape(doctor_config: Path, tmp_path: Path) -> None:
    done = run_doctor(doctor_config, "--json", "--no-projection")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    hardware = report["hardware"]
    for key in ("cpu_model", "cores", "ram_total", "ram_available", "gpus", "unified_memory"):
        assert key in hardware
    assert hardware["cores"] >= 1 and hardware["ram_total"] >= hardware["ram_available"] > 0
    assert isinstance(hardware["gpus"], list) and isinstance(hardware["unified_memory"], bool)

    models = {model["name"]: model for model in report["models"]}
    hybrid = models["hybrid"]
    for key in ("name", "path", "architecture", "file_bytes", "estimate", "measured", "fits"):
        assert key in hybrid
    assert hybrid["architecture"] == "lfm2"
    assert hybrid["file_bytes"] == (tmp_path / "hybrid.gguf").stat().st_size
    estimate = hybrid["estimate"]
    assert set(estimate) >= {"weights", "kv_cache", "compute", "total"}
    assert all(estimate[key] > 0 for key in ("weights", "kv_cache", "compute", "total"))
    assert all(isinstance(value, int) for value in estimate.values())
    assert estimate["total"] >= estimate["weights"] + estimate["kv_cache"] + estimate["compute"]
    assert (estimate["ctx"], estimate["parallel"]) == (8192, 2)  # from the configured cmd
    assert hybrid["measured"] is None  # never started here
    assert hybrid["fits"] is True
    recommend = hybrid["recommend"]
    assert set(recommend) >= {"ngl", "ctx", "parallel"}
    assert all(isinstance(recommend[key], int) for key in ("ngl", "ctx", "parallel"))

    problems = {problem["subject"]: problem for problem in report["problems"]}
    assert set(problems["missing"]) == {"subject", "message", "fix"}
    assert "does not exist" in problems["missing"]["message"]
    assert "[local.missing].path" in problems["missing"]["fix"]
    assert "not a GGUF" in problems["words"]["message"]
    assert "[local.words].path" in problems["words"]["fix"]
    assert models["missing"]["estimate"] is None and models["missing"]["fits"] is False
    assert "hybrid" not in problems

    providers = {provider["name"]: provider for provider in report["providers"]}
    assert providers["loop"]["reachable"] is True and providers["loop"]["latency_s"] > 0
    assert providers["gone"]["reachable"] is False
    assert "gone" in problems


def test_doctor_text_report(doctor_config: Path) -> None:
    done = run_doctor(doctor_config, "--no-projection")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Hardware" in out and "Local models" in out
    assert "recommend -c" in out
    assert "missing: model file" in out and "fix: download the model or fix" in out
    assert "Traceback" not in done.stderr


def test_doctor_with_no_models_or_providers(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("", encoding="utf-8")
    done = run_doctor(config, "--json", "--no-projection")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["providers"] == []
    assert {"hardware", "models", "problems"} <= set(report)
