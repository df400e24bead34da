"""ServerManager against real subprocesses: `tests/fake_server.py` in script mode stands in for
llama-server (start-up delay, crash switch, slow streams). No mocks of processes or sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig
from muxtui.engine.errors import LocalServerError, UnknownModelError
from muxtui.engine.events import ModelsChanged, ServerState, ServerStateChanged
from muxtui.engine.local.manager import ServerManager
from muxtui.engine.local.process import live_groups
from muxtui.engine.paths import Paths
from tests.conftest import REPO_ROOT
from tests.health_poller import HealthPoller

PY = shlex.quote(sys.executable)
FAKE = shlex.quote(str(REPO_ROOT / "tests" / "fake_server.py"))
S = ServerState


def fake_cmd(*extra: str) -> str:
    """A [local] cmd that runs the fake server like llama-server (it ignores `-m PATH`)."""
    return " ".join([PY, FAKE, "--port {port}", "-m {path}", *extra])


def make_config(local: dict[str, dict[str, Any]], **cache: Any) -> Config:
    """A Config with `[local]` entries; quick stall/stop defaults so failures never drag."""
    settings: dict[str, Any] = {"stall_timeout": 10.0, "stop_grace": 2.0, "ttl": 0, **cache}
    return Config(
        local={name: LocalModelConfig(**entry) for name, entry in local.items()},
        cache=CacheConfig(**settings),
    )


@dataclass
class Recorder:
    """Collects emitted events with the moment each arrived."""

    events: list[tuple[float, object]] = field(default_factory=list)

    def __call__(self, event: object) -> None:
        self.events.append((time.monotonic(), event))

    def changes(self, name: str | None = None) -> list[ServerStateChanged]:
        return [
            e
            for _, e in self.events
            if isinstance(e, ServerStateChanged) and (name is None or e.model == name)
        ]

    def states(self, name: str) -> list[ServerState]:
        return [e.state for e in self.changes(name) if e.state is not e.previous]

    def first_time(self, name: str, state: ServerState) -> float:
        for moment, e in self.events:
            if isinstance(e, ServerStateChanged) and e.model == name and e.state is state:
                return moment
        raise AssertionError(f"{name} never became {state}")


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds (bounded), polling the loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def group_gone(pgid: int) -> bool:
    """No live (non-zombie) process is left in the group."""
    for process in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A small file with the GGUF magic (the fake server never reads it)."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(4092))
    return path


@pytest.fixture
async def managers(
    paths: Paths,
) -> AsyncIterator[Callable[[Config], tuple[ServerManager, Recorder]]]:
    """Builds managers with an event recorder; closes them and checks nothing is left running."""
    made: list[ServerManager] = []

    def build(config: Config) -> tuple[ServerManager, Recorder]:
        recorder = Recorder()
        manager = ServerManager(config, paths, recorder)
        made.append(manager)
        return manager, recorder

    yield build
    for manager in made:
        await manager.aclose()
    assert live_groups() == []


async def chat(base_url: str, model_id: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], **extra}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{base_url}/chat/completions", json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


# --- cold start, readiness, warm hit ----------------------------------------------------------


async def test_cold_start_answers_after_readiness_then_warm_hit(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd("--startup-delay 0.6"), "path": str(gguf)}})
    manager, recorder = managers(config)
    watchers: list[HealthPoller] = []

    def on_event(event: object) -> None:
        recorder(event)
        # STARTING is announced as soon as the start is asked for; the port comes with the spawn.
        spawning = event.state is S.STARTING and event.detail.startswith("starting on port")
        if isinstance(event, ServerStateChanged) and spawning:
            port = next(e.port for e in manager.entries() if e.name == "m")
            assert port is not None
            watchers.append(HealthPoller(port, limit_s=20))

    manager._emit = on_event
    statuses: list[str] = []
    started = time.monotonic()
    async with manager.acquire("m", on_status=statuses.append) as endpoint:
        noticed = time.monotonic()
        reply = await chat(endpoint.base_url, endpoint.model_id)
    assert reply["choices"][0]["message"]["content"]
    assert endpoint.base_url == f"http://127.0.0.1:{endpoint.port}/v1"
    assert endpoint.model_id == "fake-model"  # read from the server's /v1/models

    # Answered only once the server was ready, never by a fixed sleep.
    assert noticed - started >= 0.6
    (watcher,) = watchers
    watcher.stop()
    assert watcher.first_ok is not None
    gap = recorder.first_time("m", S.WARM) - watcher.first_ok
    # The bound: readiness noticed within 300 ms of the server answering.
    assert gap < 0.3, f"readiness noticed {gap * 1000:.0f} ms after the server answered"
    assert any(s.startswith("starting m") for s in statuses)
    assert any("ready in" in s for s in statuses)

    async with manager.acquire("m") as again:
        assert again.pid == endpoint.pid
        await chat(again.base_url, again.model_id)
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert (entry.hits, entry.misses, entry.in_flight) == (1, 1, 0)
    assert entry.state is S.WARM and entry.pid == endpoint.pid and entry.load_time_s
    assert recorder.states("m") == [S.STARTING, S.WARM, S.BUSY, S.WARM, S.BUSY, S.WARM]
    log_text = manager.log_path("m").read_text()
    assert log_text.count("=== muxtui") == 1 and "server listening" in log_text


async def test_ten_concurrent_first_requests_start_one_process(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd("--startup-delay 0.3"), "path": str(gguf)}})
    manager, recorder = managers(config)
    seen_in_flight: list[int] = []

    async def one() -> int:
        async with manager.acquire("m") as endpoint:
            seen_in_flight.append(next(e.in_flight for e in manager.entries() if e.name == "m"))
            await chat(endpoint.base_url, endpoint.model_id)
            return endpoint.pid

    pids = await asyncio.gather(*(one() for _ in range(10)))
    assert len(set(pids)) == 1
    assert manager.log_path("m").read_text().count("=== muxtui") == 1  # one process started
    assert recorder.states("m").count(S.STARTING) == 1
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.misses == 10 and entry.in_flight == 0
    assert max(seen_in_flight) >= 2


async def test_events_and_entries_through_unload(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}})
    manager, recorder = managers(config)
    await manager.preload("m")
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.state is S.WARM and entry.hits == entry.misses == 0 and entry.pid
    assert entry.provider == "local" and entry.local and entry.source == "config"
    await manager.sample_memory()
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.rss_bytes > 1_000_000  # a Python process tree, measured
    pgid = entry.pid
    await manager.unload("m")
    assert pgid is not None and group_gone(pgid)
    assert recorder.states("m") == [S.STARTING, S.WARM, S.STOPPING, S.COLD]
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.pid is None and entry.port is None and entry.detail == "unloaded"


async def test_unknown_model_and_pin_event(managers: Any, gguf: Path) -> None:
    manager, recorder = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}}))
    with pytest.raises(UnknownModelError, match="nope"):
        async with manager.acquire("nope"):
            pass
    manager.set_pinned("m", True)
    assert [e.detail for e in recorder.changes("m")] == ["pinned"]
    assert next(e.pinned for e in manager.entries() if e.name == "m")


# --- eviction ---------------------------------------------------------------------------------


async def use(manager: ServerManager, name: str) -> int:
    async with manager.acquire(name) as endpoint:
        await chat(endpoint.base_url, endpoint.model_id)
        return endpoint.pid


async def test_lru_eviction_by_count_stops_the_whole_group(managers: Any, gguf: Path) -> None:
    entries = {n: {"cmd": fake_cmd(), "path": str(gguf)} for n in ("a", "b", "c")}
    manager, recorder = managers(make_config(entries, max_models=2))
    pid_a = await use(manager, "a")
    pid_b = await use(manager, "b")
    await use(manager, "a")  # a is now more recent than b
    pid_c = await use(manager, "c")
    assert group_gone(pid_b)  # b was least recently used
    assert not pid_gone(pid_a) and not pid_gone(pid_c)
    states = {e.name: e.state for e in manager.entries()}
    assert states["b"] is S.COLD and states["a"] is S.WARM and states["c"] is S.WARM
    (evicted,) = [e for e in recorder.changes("b") if e.state is S.STOPPING]
    assert "evicted for c" in evicted.detail and "max_models = 2" in evicted.detail


async def test_pinned_model_survives_eviction(managers: Any, gguf: Path) -> None:
    entries: dict[str, dict[str, Any]] = {
        n: {"cmd": fake_cmd(), "path": str(gguf)} for n in ("a", "b", "c")
    }
    entries["a"]["pin"] = True
    manager, _ = managers(make_config(entries, max_models=2))
    pid_a = await use(manager, "a")
    pid_b = await use(manager, "b")
    await use(manager, "c")  # a is least recently used, but pinned
    assert not pid_gone(pid_a) and group_gone(pid_b)
    await use(manager, "b")  # and again: c goes, a stays
    states = {e.name: e.state for e in manager.entries()}
    assert (states["a"], states["b"], states["c"]) == (S.WARM, S.WARM, S.COLD)


async def test_stream_in_flight_delays_eviction_until_it_ends(managers: Any, gguf: Path) -> None:
    slow = fake_cmd("--tokens 25 --token-gap 0.04")  # a stream of about one second
    entries = {"a": {"cmd": slow, "path": str(gguf)}, "b": {"cmd": fake_cmd(), "path": str(gguf)}}
    manager, recorder = managers(make_config(entries, max_models=1))
    stream_ended = 0.0
    first_token = asyncio.Event()

    async def long_stream() -> str:
        nonlocal stream_ended
        async with manager.acquire("a") as endpoint:
            body = {"model": endpoint.model_id, "messages": [], "stream": True}
            text = []
            async with (
                httpx.AsyncClient(timeout=10) as client,
                client.stream("POST", f"{endpoint.base_url}/chat/completions", json=body) as r,
            ):
                async for line in r.aiter_lines():
                    if '"content": "tok' in line:
                        first_token.set()
                    text.append(line)
            stream_ended = time.monotonic()
            return "\n".join(text)

    streaming = asyncio.create_task(long_stream())
    await first_token.wait()
    statuses: list[str] = []
    async with manager.acquire("b", on_status=statuses.append) as endpoint_b:
        await chat(endpoint_b.base_url, endpoint_b.model_id)
    text = await streaming
    assert "[DONE]" in text  # the stream was not cut
    stopping_a = recorder.first_time("a", S.STOPPING)
    assert stopping_a >= stream_ended
    assert any(s.startswith("waiting for a (1 in flight)") for s in statuses), statuses


def entry_of(manager: ServerManager, name: str) -> Any:
    return next(e for e in manager.entries() if e.name == name)


async def hold(manager: ServerManager, name: str) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A request holding `name` (in flight) until the returned event is set."""
    release = asyncio.Event()

    async def holding() -> None:
        async with manager.acquire(name):
            await release.wait()

    holder = asyncio.create_task(holding())
    await eventually(lambda: entry_of(manager, name).in_flight == 1)
    return holder, release


async def test_a_start_waiting_for_room_is_starting_with_the_reason(
    managers: Any, gguf: Path
) -> None:
    entries = {n: {"cmd": fake_cmd(), "path": str(gguf)} for n in ("qwen", "b")}
    manager, recorder = managers(make_config(entries, max_models=1))
    holder, release = await hold(manager, "qwen")
    starting = asyncio.create_task(use(manager, "b"))
    waiting = "waiting for qwen (1 in flight) to finish a reply before stopping it (max_models = 1)"
    await eventually(lambda: entry_of(manager, "b").detail == waiting)
    b = entry_of(manager, "b")
    assert b.state is S.STARTING and b.pid is None and b.port is None
    assert [(e.state, e.previous, e.detail) for e in recorder.changes("b")] == [
        (S.STARTING, S.COLD, "starting"),
        (S.STARTING, S.STARTING, waiting),
    ]
    assert S.STOPPING not in recorder.states("qwen")
    release.set()
    await holder
    await starting
    details = [e.detail for e in recorder.changes("b")]
    assert details[2] == "unloading qwen to make room (max_models = 1)"
    assert details[3].startswith("starting on port") and details[-1] == ""
    assert recorder.first_time("b", S.STARTING) < recorder.first_time("qwen", S.STOPPING)
    assert (entry_of(manager, "b").state, entry_of(manager, "qwen").state) == (S.WARM, S.COLD)


async def test_two_starts_waiting_for_room_go_in_request_order(managers: Any, gguf: Path) -> None:
    # Each counts the other as live; without an order they would wait on each other forever.
    entries = {n: {"cmd": fake_cmd(), "path": str(gguf)} for n in ("busy", "first", "second")}
    manager, recorder = managers(make_config(entries, max_models=1))
    manager.busy_wait_timeout = 20.0
    holder, release = await hold(manager, "busy")
    first = asyncio.create_task(use(manager, "first"))
    await eventually(lambda: "waiting for busy" in entry_of(manager, "first").detail)
    second = asyncio.create_task(use(manager, "second"))
    await eventually(lambda: "waiting for" in entry_of(manager, "second").detail)
    assert "first (starting)" in entry_of(manager, "second").detail
    release.set()
    await asyncio.gather(holder, first, second)
    assert recorder.first_time("first", S.WARM) < recorder.first_time("second", S.WARM)
    states = {name: entry_of(manager, name).state for name in entries}
    assert states == {"busy": S.COLD, "first": S.COLD, "second": S.WARM}


async def test_memory_budget_evicts_by_measured_rss_plus_estimate(
    managers: Any, gguf: Path
) -> None:
    entries = {
        "a": {"cmd": fake_cmd(), "path": str(gguf)},
        "b": {"cmd": fake_cmd(), "path": str(gguf), "memory_gb": 0.99},
        "c": {"cmd": fake_cmd(), "path": str(gguf), "memory_gb": 0.01},
    }
    manager, recorder = managers(make_config(entries, max_models=5, memory_budget_gb=1.0))
    pid_a = await use(manager, "a")
    # b's estimate alone fits; with a's measured RSS (a Python process, ~20 MB) it does not.
    pid_b = await use(manager, "b")
    assert group_gone(pid_a)
    (evicted,) = [e for e in recorder.changes("a") if e.state is S.STOPPING]
    assert "memory_budget_gb = 1" in evicted.detail
    # Once b runs, its measured RSS replaces the 0.99 GiB estimate, so c fits beside it.
    await use(manager, "c")
    assert not pid_gone(pid_b)


# --- TTL, crashes -----------------------------------------------------------------------------


async def test_idle_ttl_stops_the_server(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd(), "path": str(gguf), "ttl": 1}})
    manager, recorder = managers(config)
    pid = await use(manager, "m")
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.ttl_left_s is not None and 0 < entry.ttl_left_s <= 1
    await eventually(lambda: S.COLD in recorder.states("m"))
    assert group_gone(pid)
    (stopping,) = [e for e in recorder.changes("m") if e.state is S.STOPPING]
    assert "idle for 1 s" in stopping.detail


async def test_ttl_zero_and_pins_keep_servers(managers: Any, gguf: Path) -> None:
    entries = {
        "never": {"cmd": fake_cmd(), "path": str(gguf), "ttl": 0},
        "pinned": {"cmd": fake_cmd(), "path": str(gguf), "ttl": 1, "pin": True},
    }
    manager, _ = managers(make_config(entries, ttl=1))
    await use(manager, "never")
    await use(manager, "pinned")
    assert all(e.ttl_left_s is None for e in manager.entries())
    await asyncio.sleep(1.3)
    assert {e.state for e in manager.entries() if e.source == "config"} == {S.WARM}


async def test_kill_9_is_noticed_and_the_next_request_restarts(managers: Any, gguf: Path) -> None:
    manager, recorder = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}}))
    pid = await use(manager, "m")
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: S.FAILED in recorder.states("m"))
    (entry,) = [e for e in manager.entries() if e.name == "m"]
    assert entry.state is S.FAILED and entry.pid is None
    assert "killed by SIGKILL" in entry.detail
    new_pid = await use(manager, "m")
    assert new_pid != pid
    assert recorder.states("m")[-5:] == [S.FAILED, S.STARTING, S.WARM, S.BUSY, S.WARM]
    assert next(e.state for e in manager.entries() if e.name == "m") is S.WARM


async def test_crash_after_a_request_shows_the_log_tail(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd("--crash-after-requests 1"), "path": str(gguf)}})
    manager, recorder = managers(config)
    first = await use(manager, "m")
    await eventually(lambda: S.FAILED in recorder.states("m"))
    (failed,) = [e for e in recorder.changes("m") if e.state is S.FAILED]
    assert "exit status 1" in failed.detail and "crashing after 1 chats" in failed.detail
    assert await use(manager, "m") != first


# --- start-up progress and failures ---------------------------------------------------------


async def test_log_output_pushes_the_stall_deadline(managers: Any, gguf: Path) -> None:
    # The fake prints a progress line every 0.2 s for 1.5 s: longer than the 0.8 s stall limit.
    config = make_config(
        {"m": {"cmd": fake_cmd("--startup-delay 1.5"), "path": str(gguf)}}, stall_timeout=0.8
    )
    manager, _ = managers(config)
    statuses: list[str] = []
    await use(manager, "m")
    async with manager.acquire("m", on_status=statuses.append):
        pass
    entry = next(e for e in manager.entries() if e.name == "m")
    assert entry.state is S.WARM and entry.load_time_s is not None and entry.load_time_s >= 1.5


async def test_loading_progress_reaches_on_status(managers: Any, gguf: Path) -> None:
    config = make_config({"m": {"cmd": fake_cmd("--startup-delay 1.2"), "path": str(gguf)}})
    manager, _ = managers(config)
    statuses: list[str] = []
    async with manager.acquire("m", on_status=statuses.append):
        pass
    assert any(s.startswith("loading m (") and "loading model" in s for s in statuses), statuses


async def test_refresh_emits_models_changed_and_init_does_no_io(
    paths: Paths, tmp_path: Path
) -> None:
    recorder = Recorder()
    config = make_config({}, model_dirs=[str(tmp_path / "missing-dir")])
    manager = ServerManager(config, paths, recorder)
    assert recorder.events == [] and manager.names() == []
    (paths.models_dir).mkdir(parents=True)
    (paths.models_dir / "tiny.gguf").write_bytes(b"GGUF" + bytes(100))
    await manager.refresh()
    assert manager.has("tiny")
    (event,) = [e for _, e in recorder.events if isinstance(e, ModelsChanged)]
    assert "tiny" in event.names
    await manager.refresh()  # nothing new: no second event
    assert len([e for _, e in recorder.events if isinstance(e, ModelsChanged)]) == 1
    await manager.aclose()


async def test_unload_waits_for_a_request_in_flight(managers: Any, gguf: Path) -> None:
    manager, recorder = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}}))
    release = asyncio.Event()

    async def hold() -> None:
        async with manager.acquire("m"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await eventually(lambda: next(e.in_flight for e in manager.entries() if e.name == "m") == 1)
    unloading = asyncio.create_task(manager.unload("m"))
    await asyncio.sleep(0.3)
    assert not unloading.done() and S.STOPPING not in recorder.states("m")
    release.set()
    await holder
    await unloading
    assert recorder.states("m")[-2:] == [S.STOPPING, S.COLD]


async def test_closed_manager_refuses_requests(managers: Any, gguf: Path) -> None:
    manager, _ = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}}))
    pid = await use(manager, "m")
    await manager.aclose()
    assert group_gone(pid)
    with pytest.raises(LocalServerError, match="shutting down"):
        await use(manager, "m")
