"""Waiting for a started server to be ready: health polling, early-exit detection, a stall
deadline that log output pushes forward, and an overall deadline; never a fixed sleep."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muxtui.engine.errors import LocalServerError
from muxtui.engine.http_probe import http_get
from muxtui.engine.local.logs import TAIL_LINES, last_line
from muxtui.engine.local.models import LOOPBACK, file_size

_TICK_S = 0.01  # how often a start looks at its log and process while waiting for health
_PROBE_TIMEOUT_S = 2.0
_PROGRESS_EVERY_S = 0.5


class ServerExited(Exception):
    """The server process ended before it became ready."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(describe_exit(returncode))
        self.returncode = returncode


@dataclass(frozen=True)
class StartWatch:
    """One start to watch: where the server answers and writes, and how long it may take."""

    name: str
    port: int
    health: str
    log_path: Path
    log_offset: int
    started: float  # monotonic time of the spawn
    stall_timeout: float  # [cache] stall_timeout
    start_timeout: float  # [cache] start_timeout
    poll_interval: float


async def wait_ready(
    watch: StartWatch,
    exited: asyncio.Future[int],
    tail: Callable[[int], str],
    check_abort: Callable[[], None],
    announce: Callable[[str], None],
) -> None:
    """Poll health until 200; raise ServerExited on exit, LocalServerError on a deadline.

    `tail(n)` gives the server's last n log lines (secrets already masked); `check_abort`
    raises when the start was called off; `announce` gets loading progress in words.
    """
    started = watch.started
    log_size = watch.log_offset
    last_progress = last_announce = started
    probe: asyncio.Task[int] | None = None
    probe_started = next_probe = started
    try:
        while True:
            now = time.monotonic()
            size = file_size(watch.log_path)
            if size != log_size:
                log_size, last_progress = size, now
                if probe is None:
                    next_probe = now  # output often means "listening": look right away
                if now - last_announce >= _PROGRESS_EVERY_S:
                    last_announce = now
                    line = last_line(tail(3))
                    announce(f"loading {watch.name} ({now - started:.1f} s): {line[:120]}")
            _check_deadlines(watch, now, last_progress, tail)
            check_abort()
            if probe is None and now >= next_probe:
                probe_started = now
                probe = asyncio.ensure_future(probe_status(watch.port, watch.health))
            waiting: set[asyncio.Future[Any]] = {exited}
            if probe is not None:
                waiting.add(probe)
            await asyncio.wait(waiting, timeout=_TICK_S, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                raise ServerExited(exited.result())
            if probe is not None and probe.done():
                status = probe.result()
                probe = None
                if status == 200:
                    return
                next_probe = probe_started + watch.poll_interval
    finally:
        if probe is not None:
            probe.cancel()


def _check_deadlines(
    watch: StartWatch, now: float, last_progress: float, tail: Callable[[int], str]
) -> None:
    stall = watch.stall_timeout
    if now - last_progress > stall:
        raise LocalServerError(
            watch.name,
            f"no progress for {stall:g} s while starting: no new log output and "
            f"{watch.health} never answered 200; raise [cache] stall_timeout if the "
            f"model is just slow to load (log: {watch.log_path})",
            tail(TAIL_LINES),
        )
    if watch.start_timeout > 0 and now - watch.started > watch.start_timeout:
        raise LocalServerError(
            watch.name,
            f"not ready after {watch.start_timeout:g} s although it kept writing to its log "
            f"({watch.health} never answered 200); raise [cache] start_timeout if the model "
            f"is just slow to load, else check its cmd and log ({watch.log_path})",
            tail(TAIL_LINES),
        )


async def probe_status(port: int, path: str) -> int:
    """The health endpoint's status, or 0 when it does not answer (yet)."""
    try:
        status, _ = await http_get(LOOPBACK, port, path, timeout=_PROBE_TIMEOUT_S, read_body=False)
    except (OSError, TimeoutError):
        return 0
    return status


async def read_model_id(is_mlx: bool, port: int, fallback: str) -> str:
    """The model id to send: mlx_lm.server's magic "default_model", else /v1/models' first."""
    if is_mlx:
        return "default_model"
    try:
        status, body = await http_get(LOOPBACK, port, "/v1/models", timeout=_PROBE_TIMEOUT_S)
        listing = json.loads(body) if status == 200 else {}
    except (OSError, TimeoutError, ValueError):
        return fallback
    if isinstance(listing, dict):
        for key, id_key in (("data", "id"), ("models", "model")):
            items = listing.get(key)
            if isinstance(items, list) and items and isinstance(items[0], dict):
                model_id = items[0].get(id_key)
                if isinstance(model_id, str) and model_id:
                    return model_id
    return fallback


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: "exit status 3", "killed by SIGKILL"."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
