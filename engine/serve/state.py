"""The state file a running `muxtui serve` writes, so other muxtui processes find and use it.

`paths.serve_state_file` (data dir), mode 0600 in a 0700 folder, written atomically once the
socket listens and removed on a clean exit. JSON: pid, url (what a client on this machine
uses: a 0.0.0.0 bind is written as 127.0.0.1), api_key_env, version, started_at.
A client treats it as live when the pid is alive and `GET {url}/health` answers 200 in 1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from muxtui.engine.config_file import write_private_atomically

if TYPE_CHECKING:
    from pathlib import Path

HEALTH_TIMEOUT_S = 1.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to `host`."""
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def write_state(path: Path, url: str, api_key_env: str, version: str) -> dict[str, Any]:
    """Write the state file for this process; returns what was written."""
    state = {
        "pid": os.getpid(),
        "url": url,
        "api_key_env": api_key_env,
        "version": version,
        "started_at": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_atomically(path, json.dumps(state).encode())
    return state


def remove_state(path: Path) -> None:
    """Remove the state file if this process wrote it (another serve's file stays)."""
    state = read_state(path)
    if state is not None and state.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file's contents, or None when it is missing or unreadable."""
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        return None
    if not isinstance(state.get("url"), str):
        return None
    return state


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_state(path: Path) -> dict[str, Any] | None:
    """The state of a live serve (pid alive and /health answering 200 within 1 s), or None.

    A stale file (its pid is gone) is deleted."""
    state = read_state(path)
    if state is None:
        return None
    if not pid_alive(state["pid"]):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    try:
        import urllib.request  # only `muxtui serve` asks; the app need not load it

        request = urllib.request.Request(f"{state['url']}/health")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=HEALTH_TIMEOUT_S) as response:
            return state if response.status == 200 else None
    except (OSError, ValueError):
        return None
