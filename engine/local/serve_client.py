"""Talking to a running `muxtui serve` from another muxtui process on this machine.

`serve` writes its address to `paths.serve_state_file` once it listens and removes it on a clean
exit (SERVE_CONTRACT.md). Here: reading that file, telling whether the serve is live (its pid
alive and `GET /health` answering 200 within a second), and its `/muxtui/v1/...` endpoints
for the local servers it owns (their rows, load, unload and pin).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from muxtui.engine.catalog import entry_from_json
from muxtui.engine.errors import LocalServerError
from muxtui.engine.events import ModelEntry

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 900.0  # a load waits for the model to be ready, as a preload here would


@dataclass(frozen=True)
class ServeState:
    """What the state file says about a running serve."""

    pid: int
    url: str  # "http://127.0.0.1:8090": what a client on this machine uses
    api_key_env: str = ""
    version: str = ""
    started_at: float = 0.0

    @property
    def port(self) -> int:
        """The port serve listens on."""
        return urlsplit(self.url).port or 80

    def where(self) -> str:
        """'pid N, URL' for status lines and row details."""
        return f"pid {self.pid}, {self.url}"


def parse_state(text: str) -> ServeState | None:
    """The state in a state file's text, or None when it is not one (half written, foreign)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, url = data.get("pid"), data.get("url")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return None
    key_env = data.get("api_key_env")
    version = data.get("version")
    started = data.get("started_at")
    return ServeState(
        pid=pid,
        url=url.rstrip("/"),
        api_key_env=key_env if isinstance(key_env, str) else "",
        version=version if isinstance(version, str) else "",
        started_at=float(started) if isinstance(started, int | float) else 0.0,
    )


class StateFile:
    """Reads the state file, parsing it again only when it changed (a stat per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._state: ServeState | None = None

    def read(self) -> ServeState | None:
        """The state the file holds now, or None when there is no (valid) file."""
        try:
            info = os.stat(self.path)
        except OSError:
            self._stamp, self._state = None, None
            return None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            self._stamp, self._state = stamp, parse_state(text)
        return self._state


class ServeClient:
    """HTTP calls to one serve; one small client for them all, closed by `aclose()`."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, timeout=REQUEST_TIMEOUT_S)
        return self._client

    async def aclose(self) -> None:
        """Close the connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def healthy(self, state: ServeState, key: str) -> bool:
        """Whether `GET /health` answers 200 within a second."""
        try:
            response = await self._http().get(
                f"{state.url}/health", headers=_auth(key), timeout=HEALTH_TIMEOUT_S
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def local_entries(self, state: ServeState, key: str) -> list[ModelEntry] | None:
        """The rows of serve's local models (`GET /muxtui/v1/models`); None if it did not say."""
        try:
            response = await self._http().get(f"{state.url}/muxtui/v1/models", headers=_auth(key))
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            return None
        entries = []
        for item in models:
            try:
                entry = entry_from_json(item)
            except (ValueError, TypeError):
                continue  # a row this version cannot read
            if entry.local:
                entries.append(entry)
        return entries

    async def action(
        self, state: ServeState, key: str, name: str, verb: str, body: dict[str, Any] | None = None
    ) -> None:
        """`POST /muxtui/v1/models/{name}/{verb}`; a failure is a one-line `LocalServerError`."""
        url = f"{state.url}/muxtui/v1/models/{quote(name, safe='')}/{verb}"
        timeout = LOAD_TIMEOUT_S if verb == "load" else REQUEST_TIMEOUT_S
        try:
            response = await self._http().post(
                url, json=body or {}, headers=_auth(key), timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise LocalServerError(
                name, f"muxtui serve ({state.where()}) did not answer the {verb}: {exc!r}"
            ) from None
        if response.status_code >= 400:
            raise LocalServerError(
                name, f"muxtui serve ({state.where()}) refused the {verb}: {_message(response)}"
            )


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _message(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped error body, else the status."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        return message[:300]
    return f"HTTP {response.status_code}"
