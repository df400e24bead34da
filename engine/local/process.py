"""Server processes as process groups: started so they die with muxtui, stopped as a group
(SIGTERM, a grace period, SIGKILL).

The guarantees here are about the operating-system process, not about one engine object, so
the bookkeeping that backs them (the forking thread, the live process groups, the exit hooks
and the watchdog) is process-wide by necessity: `_GUARD` below is the one instance.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import muxtui
from muxtui.engine.errors import LocalServerError
from muxtui.engine.local.models import LOOPBACK
from muxtui.engine.local.watchdog import group_alive, signal_group, stop_groups

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCHDOG_MODULE = "muxtui.engine.local.watchdog"


class ManagedProcess:
    """A started server: leader of its own process group, with a future set when it exits."""

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session makes the child its group's leader
        self.exited = exited

    @property
    def returncode(self) -> int | None:
        """The exit status once the leader has exited, else None."""
        return self.popen.returncode

    async def stop(self, grace: float) -> None:
        """SIGTERM the whole group, SIGKILL whatever is left after `grace` seconds."""
        try:
            deadline = time.monotonic() + max(grace, 0.0)
            signal_group(self.pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), max(grace, 0.0))
            # The leader may be gone while children it started still run: give them the rest
            # of the grace period too.
            while group_alive(self.pgid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await self.kill()
        finally:
            _GUARD.unregister(self.pgid)

    async def kill(self) -> None:
        """SIGKILL the whole group and wait (bounded) until it is gone."""
        signal_group(self.pgid, signal.SIGKILL)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 5.0)
            deadline = time.monotonic() + 2.0
            while group_alive(self.pgid) and time.monotonic() < deadline:
                signal_group(self.pgid, signal.SIGKILL)
                await asyncio.sleep(0.02)
        finally:
            # SIGKILL has been sent to the whole group, so even a cancelled wait leaves
            # nothing for the watchdog to do.
            _GUARD.unregister(self.pgid)


def free_port(name: str, taken: set[int]) -> int:
    """A free TCP port on 127.0.0.1 that no other server of ours holds; for model `name`."""
    for _attempt in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise LocalServerError(name, "no free port on 127.0.0.1")  # pragma: no cover


async def spawn(
    argv: list[str], env: dict[str, str], log_path: Path, grace: float
) -> ManagedProcess:
    """Start `argv` in a new session with output appended to `log_path`, tied to muxtui's life."""
    loop = asyncio.get_running_loop()
    _GUARD.install_exit_hooks()
    future = _GUARD.spawner.submit(lambda: _popen(argv, env, log_path))
    popen = await asyncio.wrap_future(future)
    exited: asyncio.Future[int] = loop.create_future()
    threading.Thread(
        target=_wait_for_exit,
        args=(popen, loop, exited),
        name=f"muxtui-wait-{popen.pid}",
        daemon=True,
    ).start()
    _GUARD.register(popen.pid, grace)
    return ManagedProcess(popen, exited)


def _popen(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    preexec = _death_signal_preexec(os.getpid()) if sys.platform.startswith("linux") else None
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
        )


def _death_signal_preexec(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that asks the kernel to SIGKILL the child when its parent thread dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _wait_for_exit(
    popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, exited: asyncio.Future[int]
) -> None:
    returncode = popen.wait()
    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(_resolve, exited, returncode)


def _resolve(future: asyncio.Future[int], value: int) -> None:
    if not future.done():
        future.set_result(value)


class _Spawner:
    """One long-lived daemon thread that does every fork.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so forking from a
    short-lived worker thread would kill servers early; this thread lives as long as the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `job` on the spawner thread."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="muxtui-spawner", daemon=True
                )
                self._thread.start()
        self._jobs.put((job, future))
        return future

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)


class _ProcessGuard:
    """Tracks live server process groups and stops them when muxtui ends, however it ends."""

    def __init__(self) -> None:
        self.spawner = _Spawner()
        self._groups: dict[int, float] = {}  # pgid -> grace seconds
        # Re-entrant: the SIGTERM handler runs on the main thread, possibly while it holds this.
        self._lock = threading.RLock()
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._hooks_installed = False

    def register(self, pgid: int, grace: float) -> None:
        """Remember a live group and tell the watchdog about it."""
        with self._lock:
            self._groups[pgid] = grace
            self._tell_watchdog(f"+ {pgid} {grace:g}\n")

    def unregister(self, pgid: int) -> None:
        """Forget a group that has been stopped."""
        with self._lock:
            if self._groups.pop(pgid, None) is not None:
                self._tell_watchdog(f"- {pgid}\n")

    def live_groups(self) -> list[int]:
        """The process groups still registered."""
        with self._lock:
            return list(self._groups)

    def _tell_watchdog(self, line: str) -> None:
        for _attempt in range(2):
            if self._watchdog is None or self._watchdog.poll() is not None:
                self._watchdog = self._start_watchdog()
                if self._watchdog is None:
                    return
                line = "".join(f"+ {g} {grace:g}\n" for g, grace in self._groups.items())
            try:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write(line.encode())
                self._watchdog.stdin.flush()
                return
            except (BrokenPipeError, ValueError, OSError):
                self._watchdog = None

    @staticmethod
    def _start_watchdog() -> subprocess.Popen[bytes] | None:
        # -S: no site-packages scan, so it starts fast; -P: the working directory is not put
        # on sys.path, so a folder of the person's own named `muxtui` cannot stand in for ours.
        root = Path(muxtui.__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        try:
            return subprocess.Popen(
                [sys.executable, "-P", "-S", "-m", _WATCHDOG_MODULE],
                stdin=subprocess.PIPE,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # so a Ctrl-C aimed at muxtui does not reach it
                close_fds=True,
            )
        except OSError as exc:
            log.warning("cannot start the server watchdog: %s", exc)
            return None

    def install_exit_hooks(self) -> None:
        """Stop servers at interpreter exit and on SIGTERM/SIGHUP (unless someone handles those)."""
        if self._hooks_installed:
            return
        self._hooks_installed = True
        atexit.register(self.stop_all_now)
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, self._on_fatal_signal)

    def _on_fatal_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_all_now()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the same signal, as if we had not intercepted it

    def stop_all_now(self) -> None:
        """Synchronously stop every registered group: SIGTERM, grace, SIGKILL."""
        with self._lock:
            groups = dict(self._groups)
        if groups:
            stop_groups(groups)
        for pgid in groups:
            self.unregister(pgid)


_GUARD = _ProcessGuard()


def live_groups() -> list[int]:
    """Process groups of servers started by this process and not yet stopped."""
    return _GUARD.live_groups()
