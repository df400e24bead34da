"""One owner of the local servers: while a `muxtui serve` runs, its servers are used here.

`ServerManager` asks `RemoteOwner` before starting anything. While a serve is live (its state
file names a live pid and `/health` answers), a lease on a local model serve knows is a lease
on serve's OpenAI-compatible endpoint, with the muxtui name as the model (serve resolves it):
nothing starts in this process. The Models pane's rows for those models are serve's, and load,
unload and pin go to serve. When serve goes away (state file removed, pid gone, or `/health`
failing, checked on every lease, after a request through it failed, and every few seconds by a
watcher), the owner says so once and the next lease starts a local server here as before; when
a serve appears, the next lease uses it (a reply already streaming keeps its server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from muxtui.engine.events import ModelEntry, ModelsChanged, ServerStateChanged
from muxtui.engine.local.serve_client import ServeClient, ServeState, StateFile
from muxtui.engine.local.server import LocalEndpoint, StatusCallback
from muxtui.engine.serve.state import pid_alive

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 5.0  # a live serve's /health is asked again after this long
WATCH_EVERY_S = 5.0  # the watcher's period while a state file exists
ENTRIES_STALE_S = 1.0  # serve's rows are fetched again when older than this and asked for


@dataclass(frozen=True)
class ServeOwnerChanged:
    """A `muxtui serve` became (or stopped being) the owner of this process's local models."""

    live: bool
    url: str
    pid: int
    message: str  # one line for a status bar or notification


class RemoteOwner:
    """Whether a live serve owns the local servers now, and the way to its endpoints."""

    def __init__(self, state_file: Path, emit: Callable[[object], None]) -> None:
        self._file = StateFile(state_file)
        self._client = ServeClient()
        self._emit = emit
        self.enabled = True  # False in serve itself (see `disable`)
        self.on_live: Callable[[], None] | None = None  # the manager yields its idle servers
        self._live: ServeState | None = None
        self._key = ""
        self._checked: tuple[ServeState, float, bool] | None = None  # state, when, healthy
        self._check: asyncio.Task[bool] | None = None
        self._entries: dict[str, ModelEntry] = {}
        self._entries_at = 0.0
        self._entries_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._notice: str | None = None  # said to the next request's status line
        self._no_key_said: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def disable(self) -> None:
        """Never use a serve (serve itself: it owns its servers, never another serve's)."""
        self.enabled = False
        self._live, self._entries = None, {}

    @property
    def state(self) -> ServeState | None:
        """The serve in use now, as last checked (None: this process starts its own)."""
        return self._live

    def serves(self, name: str) -> bool:
        """Whether the serve in use (as last checked) runs `name` for us."""
        return self._live is not None and name in self._entries

    def names(self) -> list[str]:
        """The local models of the serve in use."""
        return list(self._entries) if self._live is not None else []

    # --- checking ----------------------------------------------------------------------------

    async def current(self) -> ServeState | None:
        """The live serve, checked now: the file and pid always, `/health` every few seconds."""
        if not self.enabled or self._closed:
            return None
        state = self._file.read()
        if state is None or state.pid == os.getpid() or not pid_alive(state.pid):
            self._set(None)
            return None
        self._ensure_watch()
        key = ""
        if state.api_key_env:
            key = os.environ.get(state.api_key_env, "")
            if not key:
                self._say_no_key(state)
                self._set(None)
                return None
        checked = self._checked
        now = time.monotonic()
        if checked is not None and checked[0] == state and now - checked[1] < HEALTH_EVERY_S:
            healthy = checked[2]
        else:
            healthy = await self._health(state, key)
        if healthy and state != self._live:
            healthy = await self._fetch_entries(state, key)  # the names it serves, first
        self._set(state if healthy else None, key)
        return self._live

    async def _health(self, state: ServeState, key: str) -> bool:
        """One `/health` check shared by everyone asking at once."""
        task = self._check
        if task is None or task.done():
            task = self._check = asyncio.ensure_future(self._client.healthy(state, key))
        healthy = await asyncio.shield(task)
        self._checked = (state, time.monotonic(), healthy)
        return healthy

    def suspect(self) -> None:
        """A request through serve failed: ask `/health` on the next check, and check soon."""
        self._checked = None
        if self._wake is not None:
            self._wake.set()

    def released(self, failed: bool) -> None:
        """A request through serve ended: its rows change (a server started); after a failure,
        is serve still there? (checked before the next use)."""
        if failed:
            self.suspect()
        self._entries_at = 0.0
        if self._live is not None:
            self._schedule_entries()

    def failed(self, endpoint: LocalEndpoint) -> None:
        """A request to `endpoint` failed: suspect serve if it was serve's."""
        live = self._live
        if live is not None and endpoint.pid == live.pid and endpoint.port == live.port:
            self.suspect()

    def _say_no_key(self, state: ServeState) -> None:
        if state.api_key_env in self._no_key_said:
            return
        self._no_key_said.add(state.api_key_env)
        message = (
            f"muxtui serve ({state.where()}) asks for the key in ${state.api_key_env}, "
            "which is not set here; this process starts its own local servers"
        )
        log.warning("%s", message)
        self._notice = message
        self._emit(ServeOwnerChanged(False, state.url, state.pid, message))

    def _set(self, new: ServeState | None, key: str = "") -> None:
        old = self._live
        self._key = key
        if new == old:
            return
        self._live = new
        if new is not None:
            message = f"using muxtui serve ({new.where()}) for local models"
            log.info("%s", message)
            self._notice = message
            self._emit(ServeOwnerChanged(True, new.url, new.pid, message))
            if self.on_live is not None:
                self.on_live()
        else:
            assert old is not None
            self._entries = {}
            self._checked = None
            message = f"muxtui serve ({old.where()}) stopped; starting local servers here"
            log.warning("%s", message)
            self._notice = message
            self._emit(ServeOwnerChanged(False, old.url, old.pid, message))
        self._emit(ModelsChanged())

    # --- leases ------------------------------------------------------------------------------

    async def endpoint(self, name: str, on_status: StatusCallback | None) -> LocalEndpoint | None:
        """Serve's endpoint for `name`, or None when this process must start it itself."""
        state = await self.current()
        notice, self._notice = self._notice, None
        if notice is not None and on_status is not None:
            on_status(notice)
        stale = time.monotonic() - self._entries_at >= ENTRIES_STALE_S
        if state is not None and name not in self._entries and stale:  # found since?
            await self._fetch_entries(state, self._key)
        if state is None or name not in self._entries:
            return None
        return LocalEndpoint(name, f"{state.url}/v1", name, state.port, state.pid, self._key)

    # --- the rows of serve's servers ---------------------------------------------------------

    def entries(self) -> dict[str, ModelEntry]:
        """Serve's local models by name (empty when none is in use); refreshed when stale."""
        if not self.enabled or self._closed:
            return {}
        if self._live is None:
            found = self._file.read() if self._watch_task is None else None
            if found is not None and found.pid != os.getpid():
                self._ensure_watch()  # a serve appeared: the watcher checks it at once
            return {}
        if time.monotonic() - self._entries_at >= ENTRIES_STALE_S:
            self._schedule_entries()
        return self._entries

    def merge(self, own: list[ModelEntry]) -> list[ModelEntry]:
        """This process's local rows with serve's in their place (while one is in use), except
        where this process still runs that model itself (until it stops it); then the models
        only serve knows."""
        served = self.entries()
        if not served:
            return own
        rows = [served.get(e.name, e) if e.pid is None else e for e in own]
        known = {e.name for e in own}
        return rows + [row for name, row in served.items() if name not in known]

    def _schedule_entries(self) -> None:
        if self._entries_task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state, key = self._live, self._key
        if state is None:
            return

        async def refresh() -> None:
            if not await self._fetch_entries(state, key):
                self.suspect()

        task = self._entries_task = loop.create_task(refresh())

        def done(_: asyncio.Task[None]) -> None:
            self._entries_task = None

        task.add_done_callback(done)

    async def _fetch_entries(self, state: ServeState, key: str) -> bool:
        """Fetch serve's rows; tell listeners what changed. False when serve did not answer."""
        rows = await self._client.local_entries(state, key)
        if rows is None:
            return False
        if self._live is not None and self._live != state:
            return False  # asked of a serve that another has replaced since
        self._entries_at = time.monotonic()
        detail = f"served by muxtui serve ({state.where()})"
        fresh = {
            row.name: replace(row, detail=f"{detail}; {row.detail}" if row.detail else detail)
            for row in rows
        }
        before, self._entries = self._entries, fresh
        if self._live == state:  # a first fetch is announced by the switch itself
            for name, row in fresh.items():
                old = before.get(name)
                if old is not None and old.state is not row.state:
                    self._emit(ServerStateChanged(name, row.state, old.state, row.detail))
            if set(before) != set(fresh):
                self._emit(ModelsChanged(tuple(fresh)))
        return True

    # --- actions -----------------------------------------------------------------------------

    async def action(self, name: str, verb: str, body: dict[str, Any] | None = None) -> None:
        """Ask serve to load, unload or pin `name`, then fetch its rows again."""
        state = self._live
        assert state is not None
        try:
            await self._client.action(state, self._key, name, verb, body)
        finally:
            with contextlib.suppress(Exception):
                await self._fetch_entries(state, self._key)

    def pin(self, name: str, pinned: bool) -> None:
        """Pin or unpin `name` on serve; the row shows it at once, the request goes behind."""
        row = self._entries.get(name)
        if row is not None:
            self._entries[name] = replace(row, pinned=pinned)

        async def send() -> None:
            try:
                await self.action(name, "pin", {"pinned": pinned})
            except Exception as exc:
                log.warning("pin %s on muxtui serve: %s", name, exc)

        self.spawn(send())

    def spawn(self, job: Any) -> None:
        """Run a coroutine in the background, kept until it ends (nothing without a loop)."""
        try:
            task = asyncio.get_running_loop().create_task(job)
        except RuntimeError:
            job.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the watcher -------------------------------------------------------------------------

    def _ensure_watch(self) -> None:
        if self._watch_task is not None or self._closed or not self.enabled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._wake = asyncio.Event()
        self._wake.set()  # check at once
        self._watch_task = loop.create_task(self._watch(), name="muxtui-serve-watch")

    async def _watch(self) -> None:
        """Check serve every few seconds (and at once after a failed request through it)."""
        wake = self._wake
        assert wake is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), WATCH_EVERY_S)
            wake.clear()
            try:
                if self._live is not None:
                    self._checked = None  # a live serve's /health is asked on every tick
                await self.current()
                if self._live is not None:
                    await self._fetch_entries(self._live, self._key)
            except Exception:
                log.exception("checking muxtui serve failed")

    async def aclose(self) -> None:
        """Stop the watcher and close the connections to serve."""
        self._closed = True
        tasks = [t for t in (self._watch_task, self._entries_task, self._check) if t is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()
