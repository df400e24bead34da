"""The Monitor against real processes: `[local]` servers the manager starts (tests/monitor_server.py
allocates memory on demand or leaks it steadily), a server started by hand, the sample log."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig, MonitorConfig
from muxtui.engine.core import Engine
from muxtui.engine.errors import ConfigError
from muxtui.engine.events import SampleTaken
from muxtui.engine.monitor.samples import Sample
from muxtui.engine.paths import Paths
from tests.conftest import REPO_ROOT
from tests.test_servers import gguf  # noqa: F401  (a fixture)

PY = shlex.quote(sys.executable)
SCRIPT = REPO_ROOT / "tests" / "monitor_server.py"
MB = 10**6
SAMPLE_LIMIT = 300  # every wait below gives up after this many samples


def server_cmd(*extra: str) -> str:
    """A [local] cmd running the stand-in server like llama-server."""
    return " ".join([PY, shlex.quote(str(SCRIPT)), "--port {port}", "-m {path}", *extra])


def monitored_config(local: dict[str, dict[str, Any]], model: Path, **monitor: Any) -> Config:
    """`[local]` entries serving `model`, sampled every 0.1 s unless told otherwise."""
    return Config(
        local={name: LocalModelConfig(path=str(model), **entry) for name, entry in local.items()},
        cache=CacheConfig(max_models=4, ttl=0, stall_timeout=10.0, stop_grace=2.0),
        monitor=MonitorConfig(**{"interval": 0.1, **monitor}),
    )


@pytest.fixture
def model_file(gguf: Path) -> Path:  # noqa: F811  (the fixture imported above)
    """A small GGUF file the `[local]` entries name (the stand-in server does not read it)."""
    return gguf


@pytest.fixture
async def make_engine(paths: Paths) -> AsyncIterator[Callable[[Config], Engine]]:
    made: list[Engine] = []

    def make(config: Config) -> Engine:
        engine = Engine(config, paths, discover=False)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.aclose()


async def first_sample(
    engine: Engine, predicate: Callable[[Sample], bool], seen: list[Sample] | None = None
) -> Sample:
    """The first sample that satisfies `predicate` (bounded by count)."""
    samples = engine.samples()
    try:
        for _ in range(SAMPLE_LIMIT):
            sample = await asyncio.wait_for(anext(samples), 10)
            if seen is not None:
                seen.append(sample)
            if predicate(sample):
                return sample
    finally:
        await samples.aclose()
    raise AssertionError(f"no matching sample in {SAMPLE_LIMIT}")


async def test_allocation_in_a_server_shows_as_growth_of_its_model(
    make_engine: Callable[[Config], Engine], model_file: Path, tmp_path: Path
) -> None:
    trigger = tmp_path / "grow-now"
    config = monitored_config(
        {"hog": {"cmd": server_cmd(f"--grow-when {shlex.quote(str(trigger))} --grow-mb 200")}},
        model_file,
    )
    engine = make_engine(config)
    await engine.servers.preload("hog")
    pid = next(e.pid for e in engine.list_models() if e.name == "hog")

    before = await first_sample(engine, lambda s: s.server("hog") is not None)
    server_before = before.server("hog")
    assert server_before is not None and server_before.pid == pid
    assert not server_before.foreign
    trigger.touch()
    after = await first_sample(
        engine,
        lambda s: (hog := s.server("hog")) is not None and hog.rss - server_before.rss > 180 * MB,
    )
    server_after = after.server("hog")
    assert server_after is not None and server_after.pid == pid
    grown = server_after.rss - server_before.rss
    assert 180 * MB < grown < 260 * MB
    if sys.platform.startswith("linux"):  # the growth is anonymous memory, not file pages
        assert server_before.rss_anon is not None and server_after.rss_anon is not None
        assert server_after.rss_anon - server_before.rss_anon > 180 * MB
    series = engine.monitor_series(60)
    assert max(series.servers["hog"]["rss"]) - min(series.servers["hog"]["rss"]) > 180 * MB


async def test_leaking_idle_server_raises_the_leak_alert_and_a_steady_one_does_not(
    make_engine: Callable[[Config], Engine], model_file: Path
) -> None:
    config = monitored_config(
        {
            "leaky": {"cmd": server_cmd("--leak-mb-per-s 25 --leak-cap-mb 400")},
            "steady": {"cmd": server_cmd()},
        },
        model_file,
        leak_window_s=2.0,
        leak_mb=20.0,
    )
    engine = make_engine(config)
    await asyncio.gather(engine.servers.preload("leaky"), engine.servers.preload("steady"))
    seen: list[Sample] = []
    raised = await first_sample(
        engine, lambda s: any(a.kind == "server-leak" for a in s.alerts), seen
    )
    leak = next(a for a in raised.alerts if a.kind == "server-leak")
    assert leak.subject == "leaky"
    assert "leaky's memory grew" in leak.message and "while idle" in leak.message
    # Keep watching both for two whole windows: only the leaking one is ever flagged.
    start = raised.ts
    await first_sample(engine, lambda s: s.ts - start >= 4.0, seen)
    watched = [s for s in seen if s.server("steady") is not None and s.server("leaky")]
    assert watched[-1].ts - watched[0].ts >= 4.0
    flagged = {a.subject for s in seen for a in s.alerts if a.kind == "server-leak"}
    assert flagged == {"leaky"}


async def test_sampler_thread_is_gone_after_close(
    make_engine: Callable[[Config], Engine], model_file: Path
) -> None:
    engine = make_engine(monitored_config({}, model_file))
    events: list[object] = []
    engine.add_listener(events.append)
    sample = await first_sample(engine, lambda s: True)
    assert sample.ram_total > 0 and sample.process_rss > 0
    assert "muxtui-monitor" in [t.name for t in threading.enumerate()]
    assert any(isinstance(e, SampleTaken) and e.sample is sample for e in events)
    await engine.aclose()
    assert "muxtui-monitor" not in [t.name for t in threading.enumerate()]


async def test_server_metrics_give_tokens_per_second_and_kv_use(
    make_engine: Callable[[Config], Engine], model_file: Path
) -> None:
    config = monitored_config(
        {"talker": {"cmd": server_cmd("--metrics --tokens-per-s 50")}}, model_file
    )
    engine = make_engine(config)
    await engine.servers.preload("talker")
    sample = await first_sample(
        engine,
        lambda s: (t := s.server("talker")) is not None and (t.tokens_per_s or 0) > 0,
    )
    talker = sample.server("talker")
    assert talker is not None
    assert talker.kv_used == 0.25
    assert talker.requests_processing == 0
    assert 10 < (talker.tokens_per_s or 0) < 250  # counted 50/s, measured over ~0.1 s steps


async def test_a_server_started_elsewhere_is_recognised_by_its_model_file(
    make_engine: Callable[[Config], Engine], model_file: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, str(SCRIPT), "--port", str(port), "-m", str(model_file)]
    other = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        engine = make_engine(monitored_config({"elsewhere": {"cmd": server_cmd()}}, model_file))
        sample = await first_sample(engine, lambda s: s.server("elsewhere") is not None)
        found = sample.server("elsewhere")
        assert found is not None
        assert found.foreign and found.pid == other.pid and found.port == port
        assert found.rss > 0
    finally:
        other.terminate()
        other.wait(10)


async def test_sample_log_is_private_rotated_and_holds_the_contract_keys(
    make_engine: Callable[[Config], Engine], model_file: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "logs" / "samples.jsonl"
    engine = make_engine(monitored_config({}, model_file, log=str(log_path), log_max_mb=0.004))
    await first_sample(engine, lambda s: log_rotated(log_path))
    await engine.aclose()
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600
    lines = log_path.read_text().splitlines() + Path(f"{log_path}.1").read_text().splitlines()
    assert len(lines) >= 3
    for line in lines:
        assert {"ts", "ram", "swap", "cpu_percent", "process", "servers", "gpus"} <= set(
            json.loads(line)
        )
    assert os.path.getsize(log_path) <= 4096 + 2048


def log_rotated(path: Path) -> bool:
    return Path(f"{path}.1").exists() and path.exists() and path.stat().st_size > 0


async def test_unwritable_sample_log_is_one_config_error(
    make_engine: Callable[[Config], Engine], model_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    engine = make_engine(monitored_config({}, model_file, log=str(blocker / "samples.jsonl")))
    with pytest.raises(ConfigError) as caught:
        await first_sample(engine, lambda s: True)
    message = str(caught.value)
    assert "[monitor] log" in message and str(blocker) in message and "\n" not in message
    assert "muxtui-monitor" not in [t.name for t in threading.enumerate()]


def test_without_a_driver_the_gpu_section_says_why() -> None:
    from muxtui.engine.monitor.gpu import GpuReader

    reader = GpuReader()
    reader.open()
    try:
        if not reader.status:
            pytest.skip("this machine has an NVIDIA GPU; the reason is shown only without one")
        assert reader.read() == ()
        assert reader.status.startswith(("no GPU figures:", "Apple Silicon:"))
    finally:
        reader.close()


def test_without_nvidia_ml_py_the_gpu_section_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['pynvml'] = None\n"
        "from muxtui.engine.monitor.gpu import GpuReader\n"
        "r = GpuReader(); r.open(); print(r.status); print(r.read())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status, readings = done.stdout.splitlines()
    assert status == "no GPU figures: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    assert readings == "()"


async def test_bad_interval_in_the_config_is_one_config_error(
    make_engine: Callable[[Config], Engine], model_file: Path
) -> None:
    engine = make_engine(monitored_config({}, model_file, interval=0.0))
    with pytest.raises(ConfigError, match=r"\[monitor\] interval must be more than 0"):
        await first_sample(engine, lambda s: True)


async def test_server_figures_are_asked_again_after_a_503_while_loading() -> None:
    from muxtui.engine.monitor.server_metrics import MetricsTarget, ServerMetricsReader

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, str(SCRIPT), "--port", str(port), "--metrics", "--loading-s", "3"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        reader = ServerMetricsReader()
        target = MetricsTarget("loading", server.pid, port)
        for _ in range(400):  # until it listens, still loading (at most ~20 s)
            if await _loading(port):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the stand-in server never answered")
        await reader.read([target])
        assert reader.latest == {}  # 503: nothing yet, and nothing marked as not offered
        for _ in range(400):  # the 3 s of loading pass (at most ~20 s)
            await reader.read([target])
            if reader.latest:
                break
            await asyncio.sleep(0.05)
        assert reader.latest["loading"].kv_used == 0.25
    finally:
        server.terminate()
        server.wait(10)


async def _loading(port: int) -> bool:
    from muxtui.engine.http_probe import http_get

    try:
        status, _ = await http_get("127.0.0.1", port, "/health", timeout=0.5)
    except OSError:
        return False
    return status == 503
