"""The watchdog: stops muxtui's server process groups once muxtui is gone, however it ended.

Run as `python -S -m muxtui.engine.local.watchdog` in its own session. It learns the live
process groups on stdin, one line each: `+ PGID GRACE` when a server starts, `- PGID` when it
is stopped. When stdin reaches end of file (muxtui exited or was killed) it sends SIGTERM to
every group left, waits up to the longest grace period, then sends SIGKILL. PR_SET_PDEATHSIG
already kills a server's leader on Linux; this also reaches the leader's own children, and
covers macOS, which has no PDEATHSIG. Standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable

_POLL_S = 0.02


def read_groups(lines: Iterable[str]) -> dict[int, float]:
    """The groups still registered after the `+`/`-` lines: pgid -> grace seconds."""
    groups: dict[int, float] = {}
    for line in lines:
        parts = line.split()
        try:
            if len(parts) == 3 and parts[0] == "+":
                groups[int(parts[1])] = float(parts[2])
            elif len(parts) == 2 and parts[0] == "-":
                groups.pop(int(parts[1]), None)
        except ValueError:
            continue  # a torn line from a dying writer: ignore it
    return groups


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, but is not ours to signal
    return True


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to every process in the group, ignoring a group that is already gone."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


def stop_groups(groups: dict[int, float]) -> None:
    """SIGTERM every group, wait up to the longest grace for them to go, SIGKILL the rest."""
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + max(groups.values(), default=0.0)
    while any(group_alive(pgid) for pgid in groups) and time.monotonic() < end:
        time.sleep(_POLL_S)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)


def main() -> None:
    """Follow stdin until it closes, then stop what is left."""
    # A Ctrl-C or hang-up aimed at muxtui's terminal must not end the watchdog first.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    stop_groups(read_groups(sys.stdin))


if __name__ == "__main__":
    main()
