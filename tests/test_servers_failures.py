"""Bad input and hard exits: each bad [local] entry fails with a message naming it (and the log
tail where there is one), nothing hangs, and no server outlives the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import ServerState
from muxtui.engine.local.process import live_groups
from muxtui.engine.paths import Paths
from tests.conftest import REPO_ROOT, muxtui_env
from tests.test_servers import PY, Recorder, fake_cmd, gguf, make_config, managers, use

__all__ = ["gguf", "managers"]  # fixtures shared with test_servers.py

S = ServerState


async def expect_failure(managers: Any, entry: dict[str, Any], **cache: Any) -> tuple[str, str]:
    """Start `entry` as model "bad"; returns (error message, state detail) and checks cleanup."""
    manager, recorder = managers(make_config({"bad": entry}, **cache))
    assert isinstance(recorder, Recorder)
    started = time.monotonic()
    with pytest.raises(LocalServerError) as caught:
        await use(manager, "bad")
    assert time.monotonic() - started < 30  # nothing hangs
    message = str(caught.value)
    assert message.startswith("local model 'bad': ")
    (state,) = [e for e in manager.entries() if e.name == "bad"]
    assert state.state is S.FAILED and state.pid is None
    assert live_groups() == []  # no process left behind
    return message, state.detail


async def test_missing_binary_on_path(managers: Any, gguf: Path) -> None:
    message, _ = await expect_failure(
        managers, {"cmd": "no-such-server-xyz -m {path} --port {port}", "path": str(gguf)}
    )
    assert "command 'no-such-server-xyz' not found on PATH" in message
    assert "[local.bad].cmd" in message


async def test_missing_binary_by_path(managers: Any, gguf: Path, tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "llama-server"
    message, _ = await expect_failure(
        managers, {"cmd": f"{missing} -m {{path}} --port {{port}}", "path": str(gguf)}
    )
    assert f"command {missing} does not exist" in message


async def test_missing_model_file(managers: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    message, _ = await expect_failure(managers, {"cmd": fake_cmd(), "path": str(missing)})
    assert f"model file {missing} does not exist; fix [local.bad].path" in message


async def test_unreadable_model_file_is_a_folder(managers: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    message, _ = await expect_failure(managers, {"cmd": fake_cmd(), "path": str(folder)})
    assert "is a folder, not a GGUF file" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_unreadable_model_file_permissions(managers: Any, tmp_path: Path) -> None:
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(b"GGUF")
    locked.chmod(0)
    message, _ = await expect_failure(managers, {"cmd": fake_cmd(), "path": str(locked)})
    assert "cannot read model file" in message and "Permission denied" in message


async def test_not_a_gguf_file(managers: Any, tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello, I am not a model")
    message, _ = await expect_failure(managers, {"cmd": fake_cmd(), "path": str(text)})
    assert "is not a GGUF file (it starts with b'hell', not b'GGUF')" in message


async def test_server_exiting_at_once_fails_with_its_log_tail(managers: Any) -> None:
    script = "import sys; print('fatal: cannot load the model', file=sys.stderr); sys.exit(3)"
    message, detail = await expect_failure(managers, {"cmd": f'{PY} -c "{script}" {{port}}'})
    assert "server exited during start-up (exit status 3)" in message
    assert "last log line: fatal: cannot load the model" in message
    assert detail == message


async def test_health_never_answering_hits_the_stall_deadline(managers: Any) -> None:
    silent = f'{PY} -c "import time; time.sleep(60)" {{port}}'
    started = time.monotonic()
    message, _ = await expect_failure(managers, {"cmd": silent}, stall_timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert "no progress for 0.5 s while starting" in message
    assert "/health never answered 200" in message and "stall_timeout" in message


async def test_logging_forever_without_listening_hits_the_start_timeout(managers: Any) -> None:
    # Every line pushes the stall deadline forward; only the overall deadline ends the wait.
    chatty = (
        "import itertools, time; "
        "[print('loading', n, flush=True) or time.sleep(0.05) for n in itertools.count()]"
    )
    started = time.monotonic()
    message, _ = await expect_failure(
        managers, {"cmd": f'{PY} -c "{chatty}" {{port}}'}, stall_timeout=10, start_timeout=1
    )
    assert time.monotonic() - started >= 1
    assert "not ready after 1 s although it kept writing to its log" in message
    assert "raise [cache] start_timeout" in message and "last log line: loading" in message
    assert "\n" not in message


async def test_unparsable_cmd(managers: Any) -> None:
    message, _ = await expect_failure(managers, {"cmd": "llama-server --port {port} 'unclosed"})
    assert "cannot split cmd" in message


async def test_failed_start_is_retried_on_the_next_request(managers: Any, tmp_path: Path) -> None:
    model = tmp_path / "later.gguf"
    manager, _ = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(model)}}))
    with pytest.raises(LocalServerError, match="does not exist"):
        await use(manager, "m")
    model.write_bytes(b"GGUF" + bytes(10))  # the person fixes it
    await use(manager, "m")
    assert next(e.state for e in manager.entries() if e.name == "m") is S.WARM


# --- muxtui killed with SIGKILL ----------------------------------------------------------------

CHILD = """
import asyncio, json, sys
from muxtui.engine.config import load_config
from muxtui.engine.paths import Paths
from muxtui.engine.local.manager import ServerManager

async def main():
    paths = Paths.default(sys.argv[1])
    manager = ServerManager(load_config(paths.config_file), paths, lambda event: None)
    async with manager.acquire("m") as endpoint:
        print(json.dumps({"pid": endpoint.pid}), flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


def start_child(config_file: Path) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(config_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=muxtui_env(),
        cwd=REPO_ROOT,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "the child exited before starting a server"
    return child, int(json.loads(line)["pid"])


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Pids still alive (zombies count as gone) after waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_muxtui_leaves_no_server(write_config: Any, gguf: Path) -> None:
    config = write_config(
        f'[local.m]\ncmd = {json.dumps(fake_cmd())}\npath = "{gguf}"\n[cache]\nstop_grace = 2\n'
    )
    child, server_pid = start_child(config)
    assert _alive(server_pid)
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    assert wait_gone([server_pid], timeout=5) == []


def test_sigkill_of_muxtui_also_stops_the_servers_children(write_config: Any) -> None:
    # A server that is a wrapper around another process: PDEATHSIG reaches only the wrapper,
    # the watchdog stops the rest of its process group.
    wrapper = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, 'tests/fake_server.py', '--port', sys.argv[1]]).wait()"
    )
    cmd = f'{PY} -c "{wrapper}" {{port}}'
    config = write_config(f"[local.m]\ncmd = {json.dumps(cmd)}\n[cache]\nstop_grace = 2\n")
    child, wrapper_pid = start_child(config)
    inner = [p.pid for p in psutil.Process(wrapper_pid).children(recursive=True)]
    assert inner, "the wrapper's server should be running"
    child.send_signal(signal.SIGKILL)
    child.wait(5)
    assert wait_gone([wrapper_pid, *inner], timeout=6) == []


def test_sigterm_of_muxtui_stops_servers_cleanly(
    write_config: Any, gguf: Path, paths: Paths
) -> None:
    config = write_config(f'[local.m]\ncmd = {json.dumps(fake_cmd())}\npath = "{gguf}"\n')
    child, server_pid = start_child(config)
    child.send_signal(signal.SIGTERM)
    child.wait(10)
    assert child.returncode == -signal.SIGTERM  # it still dies of the signal
    assert wait_gone([server_pid], timeout=5) == []
    # A clean stop: the server got SIGTERM and said goodbye (the fake's handler prints this).
    assert "fake server: shutting down" in (paths.server_log_dir / "m.log").read_text()
