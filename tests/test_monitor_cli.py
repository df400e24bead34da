"""`muxtui monitor` as a person runs it: a real subprocess, its output and its exit status."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MUXTUI, REPO_ROOT, muxtui_env

SERVER_KEYS = {"name", "pid", "rss", "cpu_percent", "vram"}
GPU_KEYS = {"index", "name", "util_percent", "memory_used", "memory_total"}
GPU_KEYS |= {"temperature_c", "power_w"}


def run_monitor(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    global_options = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [*MUXTUI, *global_options, "monitor", *args],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        timeout=60,
        check=False,
    )


def test_three_json_lines_with_the_contract_keys() -> None:
    result = run_monitor("--count", "3", "--interval", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    samples = [json.loads(line) for line in lines]
    for sample in samples:
        assert {"ts", "ram", "swap", "cpu_percent", "process", "servers", "gpus"} <= set(sample)
        assert {"gpu_status", "alerts"} <= set(sample)
        assert {"total", "available", "used"} <= set(sample["ram"])
        assert {"total", "used"} <= set(sample["swap"])
        assert set(sample["process"]) >= {"rss"} and sample["process"]["rss"] > 0
        assert sample["ram"]["total"] >= sample["ram"]["available"] > 0
        assert 0 <= sample["cpu_percent"] <= 100
        assert isinstance(sample["servers"], list) and isinstance(sample["alerts"], list)
        for server in sample["servers"]:
            assert set(server) >= SERVER_KEYS
        for gpu in sample["gpus"]:
            assert set(gpu) >= GPU_KEYS
        for alert in sample["alerts"]:
            assert {"kind", "subject", "message"} <= set(alert)
        # No GPUs comes with the reason; GPUs come with no reason.
        assert bool(sample["gpus"]) != bool(sample["gpu_status"])
    stamps = [sample["ts"] for sample in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_text_mode_prints_one_compact_line_per_sample() -> None:
    result = run_monitor("--count", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 2
    for line in lines:
        assert "RAM " in line and "GiB" in line and "CPU " in line and "muxtui " in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--interval", "0"], "--interval"),
        (["--interval", "-1"], "--interval"),
        (["--interval", "soon"], "--interval"),
        (["--count", "-1"], "--count"),
        (["--count", "0"], "--count"),
        (["--count", "2.5"], "--count"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(args: list[str], named: str) -> None:
    result = run_monitor(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr


def test_unwritable_sample_log_is_one_line_and_exit_2(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(f'[monitor]\nlog = "{blocker / "samples.jsonl"}"\n')
    result = run_monitor("--count", "1", config=config)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "[monitor] log" in lines[0] and str(blocker) in lines[0]


def test_a_server_started_by_another_muxtui_is_shown_by_its_model_file(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    model = tmp_path / "qwen.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = str(REPO_ROOT / "tests" / "monitor_server.py")
    other = subprocess.Popen(
        [sys.executable, script, "--port", str(port), "-m", str(model)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        config = write_config(f'[local."qwen"]\npath = "{model}"\n')
        result = run_monitor("--count", "2", "--interval", "0.2", "--json", config=config)
    finally:
        other.terminate()
        other.wait(10)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    [server] = last["servers"]
    assert (server["name"], server["pid"], server["foreign"]) == ("qwen", other.pid, True)
    assert server["rss"] > 0
