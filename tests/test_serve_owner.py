"""One owner of the local servers: an Engine in this process uses a running `muxtui serve`.

A real `muxtui serve` subprocess runs the test server as a `[local]` model; the Engine here
shares its isolated home, finds its state file, and must not start a server of its own while
serve is there. When serve goes away, the next turn starts one here; when serve comes back,
the next turn uses it again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from muxtui.engine.config import load_config
from muxtui.engine.core import Engine
from muxtui.engine.events import (
    ChatDelta,
    ChatFinished,
    ChatMessage,
    ChatStatus,
    ContextFitted,
    ServerState,
)
from muxtui.engine.local.remote_owner import ServeOwnerChanged
from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env
from tests.serve_process import Serve, own_model_servers, running_serve, start_serve
from tests.test_monitor_engine import first_sample
from tests.test_tui_support import local_entry, without_local_extra

WriteConfig = Callable[[str], Path]
CONFIG = "[network]\ndiscovery = false\nretries = 0\n\n[monitor]\ninterval = 0.1\n\n"
CONFIG += local_entry("tiny")


@pytest.fixture(autouse=True)
def _no_bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    without_local_extra(monkeypatch)  # this process knows exactly the [local] entry


def make_engine(config_file: Path) -> tuple[Engine, list[object]]:
    """An engine on the config (the isolated home's paths) recording its events."""
    paths = Paths.default(config_file)
    engine = Engine(load_config(paths.config_file, must_exist=True), paths, discover=False)
    events: list[object] = []
    engine.add_listener(events.append)
    return engine, events


async def turn(engine: Engine, model: str = "tiny") -> tuple[str, list[str]]:
    """One unrecorded reply: its text and the status lines before it."""
    statuses: list[str] = []
    text = ""
    async for event in engine.chat(model, [ChatMessage("user", "hi")]):
        if isinstance(event, ChatStatus):
            statuses.append(event.message)
        elif isinstance(event, ChatFinished):
            text = event.text
    return text, statuses


async def serve_row(engine: Engine, serve: Serve) -> None:
    """`tiny` is listed as serve's warm server, with serve's model server's pid."""

    def warm() -> bool:
        row = next(entry for entry in engine.list_models() if entry.name == "tiny")
        return row.state in (ServerState.WARM, ServerState.BUSY)

    await _until(warm)
    row = next(entry for entry in engine.list_models() if entry.name == "tiny")
    assert row.local
    assert row.state in (ServerState.WARM, ServerState.BUSY)
    assert f"served by muxtui serve (pid {serve.pid}, {serve.url})" in row.detail
    assert row.pid in {process.pid for process in serve.local_servers()}


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGKILL])
async def test_engine_uses_serve_then_falls_back_when_it_goes(
    write_config: WriteConfig, stop_with: signal.Signals
) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    serve = start_serve(config_file, paths)
    try:
        engine, events = make_engine(config_file)
        async with engine:
            text, statuses = await turn(engine)
            assert text == "tok " * 5
            assert not own_model_servers(serve), "a model server started in this process"
            assert engine.servers.owner.state is not None
            assert any("using muxtui serve" in line for line in statuses)
            assert len(serve.local_servers()) == 1  # serve started the one model server
            await serve_row(engine, serve)

            text, _ = await turn(engine)  # again: still nothing here
            assert text == "tok " * 5
            assert not own_model_servers(serve)

            serve.stop(stop_with)
            text, statuses = await turn(engine)
            assert text == "tok " * 5
            assert any("stopped; starting local servers here" in line for line in statuses)
            assert len(own_model_servers(serve)) == 1
            row = next(entry for entry in engine.list_models() if entry.name == "tiny")
            assert row.pid == own_model_servers(serve)[0].pid
            assert "served by" not in row.detail
            changes = [e for e in events if isinstance(e, ServeOwnerChanged)]
            assert [change.live for change in changes] == [True, False]
            assert changes[-1].pid == serve.pid
    finally:
        serve.stop(signal.SIGKILL)


async def test_a_serve_started_later_takes_over_at_the_next_turn(
    write_config: WriteConfig,
) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    engine, _ = make_engine(config_file)
    async with engine:
        text, _ = await turn(engine)
        assert text == "tok " * 5
        assert len(own_model_servers()) == 1  # no serve yet: started here
        with running_serve(config_file, paths) as serve:
            text, statuses = await turn(engine)
            assert text == "tok " * 5
            assert any("using muxtui serve" in line for line in statuses)
            assert len(serve.local_servers()) == 1
            deadline = time.monotonic() + 20
            while own_model_servers(serve):  # the idle one here stops: one owner
                assert time.monotonic() < deadline, "this process kept its idle server"
                await engine.servers.owner.current()
                await _pause()
            # the batch path (ready bodies) goes to serve as well
            reply = await engine.forward_chat(
                "tiny", {"messages": [{"role": "user", "content": "x"}]}
            )
            assert reply.parsed["choices"][0]["message"]["content"] == "tok " * 5
            assert not own_model_servers(serve)


async def test_models_actions_go_to_serve(write_config: WriteConfig) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    with running_serve(config_file, paths) as serve:
        engine, _ = make_engine(config_file)
        async with engine:
            await engine.rescan()  # finds serve, as the app's start-up does
            row = next(entry for entry in engine.list_models() if entry.name == "tiny")
            assert row.state is ServerState.COLD
            assert "served by muxtui serve" in row.detail

            await engine.preload("tiny")
            assert len(serve.local_servers()) == 1
            assert not own_model_servers(serve)
            await serve_row(engine, serve)
            (server,) = serve.local_servers()
            sample = await first_sample(engine, lambda s: s.server("tiny") is not None)
            sampled = sample.server("tiny")
            assert sampled is not None and sampled.pid == server.pid and sampled.rss > 0

            engine.set_pinned("tiny", True)
            row = next(entry for entry in engine.list_models() if entry.name == "tiny")
            assert row.pinned  # shown at once
            await _until(lambda: _pinned_on_serve(serve))  # and done on serve

            await engine.unload("tiny")
            assert not serve.local_servers()
            row = next(entry for entry in engine.list_models() if entry.name == "tiny")
            assert row.state is ServerState.COLD


def _pinned_on_serve(serve: Serve) -> bool:
    listed = httpx.get(f"{serve.url}/muxtui/v1/models", timeout=5, trust_env=False).json()
    return bool(next(row for row in listed["models"] if row["name"] == "tiny")["pinned"])


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await _pause()


async def test_a_serve_with_a_key_is_used_only_where_the_key_is_set(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_env = "MUXTUI_TEST_SERVE_KEY"
    config_file = write_config(CONFIG + f'[serve]\napi_key_env = "{key_env}"\n')
    paths = Paths.default(config_file)
    monkeypatch.setenv(key_env, "s3cret-serve-key")
    with running_serve(config_file, paths) as serve:
        engine, _ = make_engine(config_file)
        async with engine:
            text, statuses = await turn(engine)
            assert text == "tok " * 5
            assert any("using muxtui serve" in line for line in statuses)
            assert not own_model_servers(serve)

        monkeypatch.delenv(key_env)
        engine, events = make_engine(config_file)
        async with engine:
            text, statuses = await turn(engine)
            assert text == "tok " * 5
            assert len(own_model_servers(serve)) == 1  # no key here: its own server
            said = [e for e in events if isinstance(e, ServeOwnerChanged)]
            assert len(said) == 1 and not said[0].live
            assert f"${key_env}" in said[0].message and "s3cret" not in said[0].message
            await turn(engine)
            assert len([e for e in events if isinstance(e, ServeOwnerChanged)]) == 1  # once


def test_ask_and_models_use_the_running_serve(write_config: WriteConfig) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    with running_serve(config_file, paths) as serve:
        assert not serve.local_servers()
        run = [*MUXTUI, "--config", str(config_file)]
        asked = subprocess.run(
            [*run, "ask", "-v", "-m", "tiny", "hi"],
            env=muxtui_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert asked.returncode == 0, asked.stderr
        assert asked.stdout.strip() == ("tok " * 5).strip()
        assert f"muxtui: using muxtui serve (pid {serve.pid}, {serve.url})" in asked.stderr
        assert "starting" not in asked.stderr.replace("muxtui serve", "")  # nothing here
        (server,) = serve.local_servers()  # serve started it, for ask's request

        listed = subprocess.run(
            [*run, "models", "--json"], env=muxtui_env(), capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        row = next(item for item in json.loads(listed.stdout) if item["name"] == "tiny")
        assert row["state"] == "warm" and row["pid"] == server.pid
        assert f"served by muxtui serve (pid {serve.pid}, {serve.url})" in row["detail"]


async def test_a_serve_that_stops_answering_is_noticed_without_a_request(
    write_config: WriteConfig,
) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    with running_serve(config_file, paths) as serve:
        engine, events = make_engine(config_file)
        async with engine:
            await engine.rescan()
            assert engine.servers.owner.state is not None
            serve.process.send_signal(signal.SIGSTOP)  # alive, but /health never answers
            try:
                await _until(lambda: engine.servers.owner.state is None, timeout=20)
                said = [e for e in events if isinstance(e, ServeOwnerChanged)]
                assert [change.live for change in said] == [True, False]
                text, statuses = await turn(engine)
                assert text == "tok " * 5
                assert any("stopped; starting local servers here" in s for s in statuses)
                assert len(own_model_servers(serve)) == 1
            finally:
                serve.process.send_signal(signal.SIGCONT)


async def test_a_reply_streaming_here_keeps_its_server_until_it_ends(
    write_config: WriteConfig,
) -> None:
    slow = "[network]\ndiscovery = false\nretries = 0\n\n"
    config_file = write_config(slow + local_entry("tiny", args="--tokens 60 --token-gap 0.1"))
    paths = Paths.default(config_file)
    engine, _ = make_engine(config_file)
    async with engine:
        stream = engine.chat("tiny", [ChatMessage("user", "hi")])
        text = ""
        async for event in stream:  # the first piece: the reply streams from a server here
            if isinstance(event, ChatDelta):
                text += event.text
                break
        (own,) = own_model_servers()
        with running_serve(config_file, paths) as serve:
            assert await engine.servers.owner.current() is not None  # noticed mid-stream
            async for event in stream:  # the reply goes on from the same server
                if isinstance(event, ChatDelta):
                    text += event.text
                    assert own.is_running()
            assert text == "tok " * 60
            await _until(lambda: not own_model_servers(serve), timeout=20)  # then it stops
            text, _ = await turn(engine)
            assert text == "tok " * 60
            assert not own_model_servers(serve) and len(serve.local_servers()) == 1


async def test_a_stale_or_broken_state_file_is_not_used(write_config: WriteConfig) -> None:
    config_file = write_config(CONFIG)
    paths = Paths.default(config_file)
    state_file = paths.serve_state_file
    state_file.parent.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    engine, events = make_engine(config_file)
    async with engine:
        for text in ("{not json", json.dumps({"pid": gone.pid, "url": "http://127.0.0.1:9"})):
            state_file.write_text(text)
            reply, _ = await turn(engine)
            assert reply == "tok " * 5
            assert engine.servers.owner.state is None
        assert len(own_model_servers()) == 1
        assert not [e for e in events if isinstance(e, ServeOwnerChanged)]


async def test_turns_through_serve_are_fitted_to_its_servers_context(
    write_config: WriteConfig,
) -> None:
    """serve lists the context its model server runs with; turns here are fitted to it."""
    config = CONFIG.replace(local_entry("tiny"), local_entry("tiny", args="--context-limit 700"))
    config_file = write_config(config)
    paths = Paths.default(config_file)
    serve = start_serve(config_file, paths)
    try:
        engine, _ = make_engine(config_file)
        async with engine:
            await turn(engine)  # serve starts its model server
            assert not own_model_servers(serve)
            listing = httpx.get(f"{serve.url}/v1/models", timeout=5).json()
            tiny = next(item for item in listing["data"] if item["id"] == "tiny")
            assert tiny["context_length"] == 700

            async def fitted() -> ContextFitted | None:
                messages = [ChatMessage("user", "word " * 200) for _ in range(12)]
                async for event in engine.chat("tiny", messages):
                    if isinstance(event, ContextFitted):
                        return event
                return None

            deadline = time.monotonic() + 10
            fit = await fitted()
            while fit is not None and fit.limit is None and time.monotonic() < deadline:
                await asyncio.sleep(0.5)  # the listing is asked again shortly after a miss
                fit = await fitted()
            assert fit is not None and fit.limit == 700
            assert fit.window_source == "model-list"
            assert fit.omitted > 0 and fit.sent_tokens <= 700
            assert not own_model_servers(serve)
    finally:
        serve.stop(signal.SIGKILL)
