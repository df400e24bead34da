"""An independent readiness witness: polls a server's /health from a thread, notes the first 200.

Used by the server-manager tests and bench/warm_servers.py to measure how soon after a server
is really ready the manager notices it.
"""

from __future__ import annotations

import http.client
import threading
import time


class HealthPoller:
    """Polls http://127.0.0.1:PORT/health every `period` seconds until the first 200."""

    def __init__(self, port: int, *, period: float = 0.002, limit_s: float = 60.0) -> None:
        self.port = port
        self.first_ok: float | None = None
        self._period = period
        self._limit_s = limit_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            if status == 200:
                self.first_ok = time.monotonic()
                return
            time.sleep(self._period)

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        self._thread.join(5)
