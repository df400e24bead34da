"""A real `muxtui serve` subprocess for tests, in front of the test server as a `[local]` model.

The serve shares the test's isolated home (XDG dirs from the environment), so an Engine or app
in the test process reads the state file it writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env
from tests.test_discovery import free_port

START_TIMEOUT_S = 30.0


@dataclass
class Serve:
    """A running `muxtui serve`: its process, URL, and the state file it wrote."""

    process: subprocess.Popen[bytes]
    url: str
    state_file: Path
    log: Path

    @property
    def pid(self) -> int:
        """Serve's pid."""
        return self.process.pid

    def local_servers(self, marker: str = "fake_server.py") -> list[psutil.Process]:
        """The model server processes serve started (`marker` in their command line: the test
        server script by default)."""
        found = []
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in psutil.Process(self.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if marker in " ".join(process.cmdline()):
                        found.append(process)
        return found

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop serve with `sig` and wait for it (its process group goes too after a kill)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # servers left by a SIGKILL


def start_serve(config_file: Path, paths: Paths, *extra: str) -> Serve:
    """Start `muxtui serve` on a free loopback port; returns once its state file is live."""
    port = free_port()
    log = config_file.parent / f"serve-{port}.log"
    command = [*MUXTUI, "--config", str(config_file), "serve", "--port", str(port), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=muxtui_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: a SIGKILL test can take its servers too
        )
    serve = Serve(process, f"http://127.0.0.1:{port}", paths.serve_state_file, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text(errors='replace')[-2000:]}")
        if serve.state_file.exists() and _healthy(serve.url):
            return serve
        if time.monotonic() > deadline:
            serve.stop(signal.SIGKILL)
            raise AssertionError(f"serve did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def _healthy(url: str) -> bool:
    try:
        status = httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code
    except httpx.HTTPError:
        return False
    return status in (200, 401)  # listening (a serve with a key may guard /health too)


@contextlib.contextmanager
def running_serve(config_file: Path, paths: Paths, *extra: str) -> Iterator[Serve]:
    """A serve for the length of a `with` block, stopped (and its servers with it) after."""
    serve = start_serve(config_file, paths, *extra)
    try:
        yield serve
    finally:
        serve.stop(signal.SIGTERM)


def own_model_servers(*serves: Serve, marker: str = "fake_server.py") -> list[psutil.Process]:
    """Model server processes (the test server script) this test process started itself,
    leaving out serve processes and what they started."""
    theirs = {serve.pid for serve in serves}
    for serve in serves:
        with contextlib.suppress(psutil.NoSuchProcess):
            theirs |= {p.pid for p in psutil.Process(serve.pid).children(recursive=True)}
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.pid not in theirs and marker in " ".join(process.cmdline()):
                found.append(process)
    return found
