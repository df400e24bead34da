"""`muxtui serve` as a real subprocess: serves, writes and removes its state file, and refuses to
start, in one line with exit 2, when it would be unsafe or cannot bind."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env
from tests.fake_server import FakeOpenAIServer
from tests.serve_support import dead_port
from tests.valkey_support import ValkeyServer, valkey  # noqa: F401  (the fixture)

WriteConfig = Callable[..., Path]
START_TIMEOUT_S = 30.0


def config_for(write_config: WriteConfig, base_url: str, serve: str = "") -> Path:
    return write_config(
        f"""
[network]
discovery = false

[providers.fake]
base_url = "{base_url}"

[models.little]
provider = "fake"
id = "fake-model"

[serve]
{serve}
"""
    )


def run_serve(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(config), "serve", *args],
        capture_output=True,
        text=True,
        env=muxtui_env(**env),
        timeout=60,
        check=False,
    )


@contextmanager
def serve_process(
    config: Path, port: int, paths: Paths, **env: str
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [*MUXTUI, "--config", str(config), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=muxtui_env(**env),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not paths.serve_state_file.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "serve did not write its state file"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_serve_answers_then_stops_cleanly_on_sigterm(
    write_config: WriteConfig, fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = config_for(write_config, fake_server.base_url)
    port = dead_port()
    with serve_process(config, port, paths) as process:
        state = json.loads(paths.serve_state_file.read_bytes())
        assert state["url"] == f"http://127.0.0.1:{port}" and state["pid"] == process.pid
        body = {"model": "little", "messages": [{"role": "user", "content": "hi"}]}
        reply = httpx.post(f"{state['url']}/v1/chat/completions", json=body, timeout=30)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
        streamed = httpx.post(
            f"{state['url']}/v1/chat/completions", json={**body, "stream": True}, timeout=30
        )
        assert streamed.text.endswith("data: [DONE]\n\n")

        second = run_serve(config, "--port", str(dead_port()))
        line = one_line(second)
        assert "already running" in line and state["url"] in line

        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "Traceback" not in err
    assert not paths.serve_state_file.exists()


def test_ctrl_c_removes_the_state_file(
    write_config: WriteConfig, fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = config_for(write_config, fake_server.base_url)
    with serve_process(config, dead_port(), paths) as process:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0 and "Traceback" not in err
    assert not paths.serve_state_file.exists()


def test_a_port_in_use_is_one_line(
    write_config: WriteConfig, fake_server: FakeOpenAIServer
) -> None:
    config = config_for(write_config, fake_server.base_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(run_serve(config, "--port", str(port)))
    assert f"port {port}" in line and "--port" in line


def test_a_non_loopback_host_without_a_key_refuses(
    write_config: WriteConfig, fake_server: FakeOpenAIServer, paths: Paths
) -> None:
    config = config_for(write_config, fake_server.base_url)
    line = one_line(run_serve(config, "--host", "0.0.0.0", "--port", str(dead_port())))
    assert "0.0.0.0" in line and "api_key_env" in line
    keyed = config_for(write_config, fake_server.base_url, 'api_key_env = "MUXTUI_TEST_KEY"')
    line = one_line(run_serve(keyed, "--host", "0.0.0.0", "--port", str(dead_port())))
    assert "MUXTUI_TEST_KEY" in line and "unset or empty" in line
    assert not paths.serve_state_file.exists()


def test_a_bad_port_is_one_line(write_config: WriteConfig, fake_server: FakeOpenAIServer) -> None:
    line = one_line(run_serve(config_for(write_config, fake_server.base_url), "--port", "http"))
    assert "--port" in line and "'http'" in line


def test_two_serves_share_hits_through_valkey_and_go_on_when_it_dies(
    write_config: WriteConfig,
    fake_server: FakeOpenAIServer,
    paths: Paths,
    valkey: ValkeyServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    cache = f'\n[response_cache]\nbackend = "redis"\nurl = "{valkey.url}"\n'
    config = config_for(write_config, fake_server.base_url).with_suffix(".toml")
    config.write_text(config.read_text() + cache)
    other_data = tmp_path / "other-data"  # a second serve keeps its own state file
    other = Paths(paths.config_file, other_data / "muxtui", paths.cache_dir, paths.log_dir)
    body = {
        "model": "little",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
    }
    ports = (dead_port(), dead_port())
    with (
        serve_process(config, ports[0], paths),
        serve_process(config, ports[1], other, XDG_DATA_HOME=str(other_data)),
    ):
        first = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/chat/completions", json=body)
        assert first.headers["x-muxtui-cache"] == "miss"
        deadline = time.monotonic() + 10
        while True:  # the store happens after the reply went out
            second = httpx.post(f"http://127.0.0.1:{ports[1]}/v1/chat/completions", json=body)
            if second.headers["x-muxtui-cache"] == "hit" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert second.headers["x-muxtui-cache"] == "hit"
        assert second.json()["choices"] == first.json()["choices"]
        sent = fake_server.chat_requests
        valkey.stop()
        for n in range(3):
            changed = {**body, "messages": [{"role": "user", "content": f"again {n}"}]}
            url = f"http://127.0.0.1:{ports[n % 2]}/v1/chat/completions"
            assert httpx.post(url, json=changed, timeout=30).status_code == 200
        assert fake_server.chat_requests >= sent + 3
