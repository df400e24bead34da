"""llama-server's own fit projection, as a second opinion beside muxtui's estimate.

Builds with `--fit` (on by default since late 2025) project memory per device before
loading and, at log verbosity 4, print it: a "memory breakdown" table and a line "projected
to use N MiB of host memory". With every fitted argument given (`-ngl` among them) the build
skips the projection, so `run_projection` leaves `-ngl` to it. Its Host figure leaves out the
weights it repacks (its CPU_REPACK row) and the process's own overhead.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from muxtui.engine.fit.estimate import MIB, FitParams

_ROW = re.compile(r"memory_breakdown_print: \|\s+- (?P<name>.+?)\s+\|(?P<numbers>[^|]*)\|")
_PROJECTED = re.compile(r"projected to use (\d+) MiB of (host|device) memory")
_DONE = ("fitting params to free memory took", "failed to fit params", "llama_model_loader")


@dataclass(frozen=True)
class ProjectedDevice:
    """One row of llama.cpp's memory breakdown, in bytes."""

    name: str  # "Host", "CPU_REPACK", "CUDA0 (RTX 3090)", ...
    self_bytes: int  # model + context + compute
    model: int
    context: int
    compute: int


@dataclass(frozen=True)
class Projection:
    """What llama-server projected before loading."""

    host_bytes: int | None  # its "projected to use ... of host memory" figure
    device_bytes: int | None  # the same for GPU memory, when it offloads
    devices: tuple[ProjectedDevice, ...]

    @property
    def host_rows_bytes(self) -> int:
        """Host plus the extra host buffers (CPU_REPACK) of the breakdown."""
        return sum(
            device.self_bytes
            for device in self.devices
            if device.name == "Host" or device.name.startswith("CPU")
        )


def parse_projection(log: str) -> Projection | None:
    """The first memory breakdown (the one printed before loading) of a llama-server log."""
    rows: list[ProjectedDevice] = []
    host = device = None
    for line in log.splitlines():
        match = _ROW.search(line)
        if match:
            if any(row.name == match["name"] for row in rows):
                break  # a second table: the one printed at exit
            numbers = [int(n) for n in re.findall(r"\d+", match["numbers"])]
            if len(numbers) == 7:  # total = free + (self = model + context + compute) + other
                _, _, own, model, context, compute, _ = numbers
            elif len(numbers) == 4:  # self = model + context + compute
                own, model, context, compute = numbers
            else:
                continue
            rows.append(
                ProjectedDevice(
                    match["name"].strip(), own * MIB, model * MIB, context * MIB, compute * MIB
                )
            )
            continue
        projected = _PROJECTED.search(line)
        if projected:
            if projected[2] == "host":
                host = int(projected[1]) * MIB
            else:
                device = int(projected[1]) * MIB
        if any(marker in line for marker in _DONE) and rows:
            break
    if not rows and host is None:
        return None
    return Projection(host, device, tuple(rows))


def supports_fit(help_text: str) -> bool:
    """Whether a llama-server's `--help` lists `--fit`."""
    return bool(re.search(r"(^|\s)--fit\b", help_text))


def projection_flags(params: FitParams) -> list[str]:
    """llama-server arguments that make it print its projection for `params` and nothing else."""
    return [*params.flags(ngl=False, cache_ram=False), "--fit", "on", "-lv", "4"]


def run_projection(
    binary: str,
    model_path: str,
    params: FitParams,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Projection | None:
    """Start `binary` just long enough to print its projection for `model_path` (blocking).

    None when it has no projection (an older build) or did not print one in `timeout`.
    """
    with tempfile.TemporaryDirectory(prefix="muxtui-fit-") as folder:
        log_path = Path(folder) / "server.log"
        argv = [binary, "-m", model_path, "--host", "127.0.0.1", "--port", str(_free_port())]
        argv += projection_flags(params)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        try:
            text = _wait_for_projection(process, log_path, timeout)
        finally:
            _stop(process)
        return parse_projection(text)


def _wait_for_projection(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if any(marker in text for marker in _DONE) or process.poll() is not None:
            return log_path.read_text(errors="replace")
        time.sleep(0.05)
    return text


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def help_text(binary: str, env: Mapping[str, str] | None = None) -> str:
    """`binary --help` (blocking); '' when it cannot be run."""
    return run_quietly([binary, "--help"], env)[1]


def run_quietly(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int | None, str]:
    """(exit status or None, output) of a short command; the status is negative for a signal."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    return done.returncode, done.stdout + done.stderr
