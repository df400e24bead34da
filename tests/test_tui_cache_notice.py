"""Pilot test: the app says when the reply cache cannot be used (Redis down), once."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_server import FakeOpenAIServer
from tests.test_tui_support import make_app, started, wait_until, without_local_extra

WriteConfig = Callable[[str], Path]


async def test_a_dead_redis_is_shown_once_and_replies_still_come(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_local_extra(monkeypatch)
    server = FakeOpenAIServer().start()
    with socket.socket() as closed:  # bound, never listening: nothing answers there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        config_file = write_config(
            f'[providers.up]\nbase_url = "{server.base_url}"\n\n'
            '[models.m]\nprovider = "up"\nid = "fake-model"\n\n'
            "[network]\ndiscovery = false\n\n"
            f'[response_cache]\nbackend = "redis"\nurl = "redis://:hunter2@127.0.0.1:{port}/0"\n'
        )
        try:
            app = make_app(config_file)
            async with app.run_test(size=(120, 40)) as pilot:
                await started(pilot)
                assert app.engine is not None
                for question in ("q1", "q2"):
                    body = {"messages": [{"role": "user", "content": question}], "temperature": 0}
                    reply = await app.engine.forward_chat("m", body)
                    assert reply.parsed["choices"][0]["message"]["content"]
                    assert not reply.cached

                def said() -> list[str]:
                    return [n.message for n in app._notifications if "reply cache" in n.message]

                await wait_until(pilot, lambda: bool(said()), "the reply cache notice")
                (message,) = said()
                assert f"127.0.0.1:{port}" in message and "uncached" in message
                assert "hunter2" not in message
                assert server.chat_requests == 2  # both went to the server
        finally:
            server.stop()
