"""Start-up benchmark: time to the first complete frame of `muxtui`, its RSS then, and `--version`.

The app runs in a detached tmux pane at 120x40 with an isolated HOME and XDG dirs. The pane is
captured (with colours) every few milliseconds; the first complete frame is the last change
before the screen stays the same for 300 ms, timed from just before tmux launches the command.
RSS is read with psutil from the pane's process tree at each change, and the figure reported is
the one taken at that last change. Each figure is the median of several runs.

With `--baseline`, a minimal Textual app (Header, Static, Footer) is timed the same way, its runs
alternating with muxtui's, and the first frame is reported as a ratio to it: the target is
relative (<= 1.25x) because what Textual itself costs depends on the machine and its load.

    python bench/startup.py [--runs 5] [--scenario empty|configured] [--baseline] [--cmd "..."]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
STABLE_FOR_S = 0.300
POLL_EVERY_S = 0.004
GIVE_UP_AFTER_S = 15.0
WIDTH, HEIGHT = 120, 40
TRACE = bool(os.environ.get("MUXTUI_BENCH_TRACE"))
# A tmux server of our own: a session made on an already running server would take that
# server's environment (HOME, PYTHONPATH) instead of the isolated one.
TMUX = ["tmux", "-L", f"muxtui-startup-{os.getpid()}"]
FRAME_RATIO_TARGET = 1.25  # muxtui's first frame / the minimal Textual app's, same run
RSS_TARGET_MIB = 60
VERSION_TARGET_S = 0.150
CONFIGURED = """\
[providers.local8000]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[models.example]
provider = "local8000"
id = "example-model"

[network]
discovery = false
"""


# A minimal Textual app (header, one line, footer), timed the same way for comparison: the
# floor any Textual app pays on this machine (interpreter, Textual's import, first render).
BASELINE_APP = """
from textual.app import App
from textual.widgets import Footer, Header, Static

class Baseline(App):
    def compose(self):
        yield Header()
        yield Static("hello")
        yield Footer()

Baseline().run()
"""


@dataclass(frozen=True)
class FrameTiming:
    """One launch: seconds to the first complete frame and the RSS at that frame."""

    first_frame_s: float
    rss_bytes: int


def isolated_env(home: Path) -> dict[str, str]:
    """The environment with HOME and the XDG dirs inside `home`, and no API keys."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        env[var] = str(home / sub)
    # PYTHONDONTWRITEBYTECODE would make every launch compile muxtui from source (an install has
    # bytecode, and so does Textual here): the warm-up launch writes it, as a first run would.
    for var in ("MUXTUI_CONFIG", "OPENROUTER_API_KEY", "OPENAI_API_KEY", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    env["TERM"] = "xterm-256color"
    return env


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            # The pane's shell execs the command, but count a wrapper shell out if it stayed.
            if process.name() in ("sh", "bash", "dash") and process.pid == pid:
                continue
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def capture(session: str) -> str:
    """The pane's visible text with colour escapes, so theme changes count as changes."""
    result = subprocess.run(
        [*TMUX, "capture-pane", "-p", "-e", "-t", session],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def time_first_frame(command: str, env: dict[str, str], session: str) -> FrameTiming:
    """Launch `command` in a fresh tmux session and time its first complete frame."""
    subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True, check=False)
    blank = ""
    new_session = [*TMUX, "new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT)]
    for _attempt in range(20):
        # The server exits with its last session; a launch right then can find it going away.
        started = time.perf_counter()
        launched = subprocess.run([*new_session, command], env=env, capture_output=True)
        if launched.returncode == 0:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"tmux could not start a session: {launched.stderr!r}")
    pane_pid = int(
        subprocess.run(
            [*TMUX, "display-message", "-p", "-t", session, "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    previous = blank = capture(session)
    last_change_at = started
    rss_at_change = 0
    try:
        while True:
            now = time.perf_counter()
            screen = capture(session)
            if screen != previous:
                if TRACE:
                    changed = [
                        index
                        for index, (old, new) in enumerate(
                            zip(previous.splitlines(), screen.splitlines(), strict=False)
                        )
                        if old != new
                    ]
                    line = _plain(screen.splitlines()[changed[-1]])[:110] if changed else ""
                    print(f"  change at {now - started:.3f} s: rows {changed[:6]} {line!r}")
                last_change_at = now
                rss_at_change = tree_rss(pane_pid)
                previous = screen
            elif previous != blank and now - last_change_at >= STABLE_FOR_S:
                return FrameTiming(last_change_at - started, rss_at_change)
            if now - started > GIVE_UP_AFTER_S:
                raise RuntimeError(f"no stable frame within {GIVE_UP_AFTER_S} s: {command}")
            time.sleep(POLL_EVERY_S)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True, check=False)


def time_version(muxtui: str, env: dict[str, str], runs: int) -> list[float]:
    """Wall time of `muxtui --version`, one figure per run."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([muxtui, "--version"], env=env, capture_output=True, check=True)
        timings.append(time.perf_counter() - started)
    return timings


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--version-runs", type=int, default=9)
    parser.add_argument(
        "--scenario",
        choices=("empty", "configured"),
        default="empty",
        help="empty: first run, nothing configured (discovery on); configured: one provider",
    )
    parser.add_argument("--cmd", help="time this command instead of `muxtui --config ...`")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time a minimal Textual app (header, one line, footer) the same way",
    )
    args = parser.parse_args(argv)

    if shutil.which("tmux") is None:
        print("startup.py needs tmux on PATH", file=sys.stderr)
        return 2
    muxtui = shutil.which("muxtui") or str(Path(sys.executable).parent / "muxtui")
    with tempfile.TemporaryDirectory(prefix="muxtui-startup-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = isolated_env(home)
        config_file = Path(tmp) / "config.toml"
        if args.scenario == "configured":
            config_file.write_text(CONFIGURED, encoding="utf-8")
        command = args.cmd or (
            f"cd {shlex.quote(tmp)} && exec {shlex.quote(muxtui)} "
            f"--config {shlex.quote(str(config_file))}"
        )
        if args.scenario == "empty" and not args.cmd:
            command = f"cd {shlex.quote(tmp)} && exec {shlex.quote(muxtui)}"
        session = f"muxtui-startup-{os.getpid()}"
        baseline_command = ""
        if args.baseline:
            script = Path(tmp) / "baseline_app.py"
            script.write_text(BASELINE_APP, encoding="utf-8")
            baseline_command = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(script))}"
            time_first_frame(baseline_command, env, session)  # warm up as well
        time_first_frame(command, env, session)  # warm the page cache and .pyc files
        frames: list[FrameTiming] = []
        baseline: list[FrameTiming] = []
        for run in range(args.runs):
            # Alternate which goes first, so a change in the machine's load hits both alike.
            order = [False, True] if run % 2 == 0 else [True, False]
            for is_baseline in order if baseline_command else [False]:
                if is_baseline:
                    baseline.append(time_first_frame(baseline_command, env, session))
                else:
                    frames.append(time_first_frame(command, env, session))
        versions = time_version(muxtui, env, args.version_runs)
        subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)

    first_frame = statistics.median(f.first_frame_s for f in frames)
    rss = statistics.median(f.rss_bytes for f in frames)
    version = statistics.median(versions)
    print(f"command: {command if args.cmd else 'muxtui'}  scenario: {args.scenario}")
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  tmux {WIDTH}x{HEIGHT}")
    runs = ", ".join(f"{f.first_frame_s:.3f}" for f in frames)
    print(f"first frame   median {first_frame:.3f} s  runs: {runs}")
    if baseline:
        base_frame = statistics.median(f.first_frame_s for f in baseline)
        base_rss = statistics.median(f.rss_bytes for f in baseline)
        base_runs = ", ".join(f"{f.first_frame_s:.3f}" for f in baseline)
        print(
            f"baseline      minimal Textual app: first frame median {base_frame:.3f} s, "
            f"RSS {base_rss / 2**20:.1f} MiB  runs: {base_runs}"
        )
        paired = statistics.median(
            f.first_frame_s / b.first_frame_s for f, b in zip(frames, baseline, strict=True)
        )
        print(
            f"frame ratio   {first_frame / base_frame:.2f}x the minimal app "
            f"(median of paired runs {paired:.2f}x)  (target <= {FRAME_RATIO_TARGET:.2f}x)"
        )
    rss_runs = ", ".join(f"{f.rss_bytes / 2**20:.1f}" for f in frames)
    print(
        f"RSS at frame  median {rss / 2**20:.1f} MiB  (target <= {RSS_TARGET_MIB})  "
        f"runs: {rss_runs}"
    )
    version_runs = ", ".join(f"{v:.3f}" for v in versions)
    print(
        f"--version     median {version:.3f} s  (target <= {VERSION_TARGET_S:.3f})  "
        f"runs: {version_runs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
