"""One request's hold on a local server (`ServerManager.acquire`): the warm server it was given,
or the endpoint of a `muxtui serve` that runs the model."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from muxtui.engine.local.server import LocalEndpoint, ServerRecord, StatusCallback

if TYPE_CHECKING:
    from muxtui.engine.local.manager import ServerManager


class Lease(AbstractAsyncContextManager[LocalEndpoint]):
    """One request's hold on a warm server: in flight from enter to exit."""

    def __init__(self, manager: ServerManager, name: str, on_status: StatusCallback | None) -> None:
        self._manager = manager
        self._name = name
        self._on_status = on_status
        self._server: ServerRecord | None = None
        self._remote = False

    async def __aenter__(self) -> LocalEndpoint:
        remote = await self._manager.owner.endpoint(self._name, self._on_status)
        if remote is not None:  # a `muxtui serve` runs it: nothing starts here
            self._remote = True
            return remote
        server = await self._manager._enter(self._name, self._on_status)
        self._server = server
        assert server.endpoint is not None
        return server.endpoint

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._manager._release(self._server)
            self._server = None
        elif self._remote:
            self._manager.owner.released(exc is not None and isinstance(exc, Exception))
