"""The watchdog module, started the way muxtui starts it: when its stdin closes it stops the
process groups it was told about, SIGTERM first and SIGKILL after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys

from muxtui.engine.local.process import _ProcessGuard
from muxtui.engine.local.watchdog import read_groups

SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_read_groups_follows_additions_and_removals() -> None:
    lines = ["+ 10 2", "+ 11 0.5", "- 10", "garbage", "+ x 1", "+ 12", "+ 13 1.5\n"]
    assert read_groups(lines) == {11: 0.5, 13: 1.5}


def start_group(code: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_closing_stdin_stops_the_registered_groups_only() -> None:
    polite = start_group(SLEEPER)
    stubborn = start_group(STUBBORN)
    forgotten = start_group(SLEEPER)
    watchdog = _ProcessGuard._start_watchdog()
    assert watchdog is not None and watchdog.stdin is not None
    try:
        for child in (polite, stubborn, forgotten):
            watchdog.stdin.write(f"+ {child.pid} 0.5\n".encode())
        watchdog.stdin.write(f"- {forgotten.pid}\n".encode())
        watchdog.stdin.close()  # muxtui is gone
        assert watchdog.wait(10) == 0
        assert polite.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL  # ignored SIGTERM: killed after the grace
        assert forgotten.poll() is None  # stopped by muxtui already: not the watchdog's
    finally:
        for child in (polite, stubborn, forgotten):
            child.kill()
            child.wait(5)
