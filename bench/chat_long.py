"""Chat at length: a 2,000-message conversation in the running app, timed from the screen.

`muxtui` runs in a detached tmux pane (120x40, isolated HOME) against the loopback test server
(tests/fake_server.py, run in this process on its own thread) serving one model with a context
window of `--context` tokens and llama-server's /tokenize, so every turn is fitted to the window
as a real local model's would be. Keys go in with `tmux send-keys`; the pane is captured every
few milliseconds and a figure ends when its text is on screen.

- memory (first, after a 4-message conversation of the same kind of Markdown was opened once,
  so what any first reply loads is in the figure before): the app's RSS in an empty chat, then
  after opening the long conversation and 100 pages of PageUp, then after going on up to its
  first message, then a few seconds after leaving it for a new chat.
- open: from the Enter that selects the conversation in the list to its newest message on
  screen (and to the screen filled: the reply before it drawn too); the same for a
  conversation of 4 messages, for scale.
- reply: from the Enter that sends a prompt to the first text of the reply on screen. The long
  conversation's first turns are reported one by one with the /tokenize calls each made: the
  engine counts its messages with the server's tokenizer, newest first, at most 64 a turn,
  until the window is covered. Then turns in the long conversation and in an empty chat
  alternate, and their medians are compared.

    python bench/chat_long.py [--runs 7] [--messages 2000] [--context 8192]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.startup import TMUX, isolated_env, tree_rss  # noqa: E402
from muxtui.engine.history import History  # noqa: E402
from muxtui.engine.paths import Paths  # noqa: E402
from tests.fake_server import FakeOpenAIServer  # noqa: E402
from tests.long_history import add_conversation, numbered_text  # noqa: E402

WIDTH, HEIGHT = 120, 40
POLL_EVERY_S = 0.002
GIVE_UP_AFTER_S = 20.0
OPEN_TARGET_S = 0.150
RSS_TARGET_MIB = 30
REPLY_TARGET_MS = 50
COUNTING_TURNS_AT_MOST = 12
BURSTS_AT_MOST = 80  # of 20 PageUps, on the way to the first message
SESSION = f"muxtui-chat-long-{os.getpid()}"


def screen() -> str:
    """The pane's text, without colours."""
    result = subprocess.run(
        [*TMUX, "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True, check=False
    )
    return result.stdout


def keys(*names: str) -> None:
    """Send keys to the pane (tmux key names, or literal text)."""
    subprocess.run([*TMUX, "send-keys", "-t", SESSION, *names], check=True)


def wait_for(seen: Callable[[str], bool], what: str) -> float:
    """Poll the screen until `seen` holds; the seconds it took."""
    started = time.perf_counter()
    while not seen(screen()):
        if time.perf_counter() - started > GIVE_UP_AFTER_S:
            raise RuntimeError(f"not on screen within {GIVE_UP_AFTER_S} s: {what}\n{screen()}")
        time.sleep(POLL_EVERY_S)
    return time.perf_counter() - started


def seconds_until(send: Callable[[], None], seen: Callable[[str], bool], what: str) -> float:
    """Seconds from just before `send` to `seen` holding on screen."""
    started = time.perf_counter()
    send()
    deadline = started + GIVE_UP_AFTER_S
    while not seen(screen()):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not on screen within {GIVE_UP_AFTER_S} s: {what}\n{screen()}")
        time.sleep(POLL_EVERY_S)
    return time.perf_counter() - started


def app_pid() -> int:
    """The pid of the process in the pane (the app: the pane's shell execs it)."""
    pane = subprocess.run(
        [*TMUX, "display-message", "-p", "-t", SESSION, "#{pane_pid}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(pane.stdout.strip())


def settle(pid: int, quiet_s: float = 1.0) -> int:
    """Wait until the app's CPU use is near zero for `quiet_s`; its RSS then, in bytes."""
    process = psutil.Process(pid)
    process.cpu_percent(None)
    quiet_since = time.perf_counter()
    deadline = quiet_since + GIVE_UP_AFTER_S
    while time.perf_counter() - quiet_since < quiet_s and time.perf_counter() < deadline:
        time.sleep(0.2)
        if process.cpu_percent(None) > 5.0:
            quiet_since = time.perf_counter()
    return tree_rss(pid)


def new_chat() -> None:
    keys("C-n")
    wait_for(lambda text: "New chat with" in text, "a new chat")


TITLES = ("two thousand", "short four")


def select(title: str) -> None:
    """Filter the list down to one conversation and put the cursor on it (not opened yet)."""
    keys("C-l")
    wait_for(lambda text: "⏎ open" in text, "the focused list")
    keys("/", title)
    others = [other for other in TITLES if other != title]
    wait_for(
        lambda text: "1 match" in text and not any(other in text for other in others),
        "the filtered list",
    )
    keys("Down")
    time.sleep(0.2)


def prepare(home: Path, base_url: str, messages: int, context: int) -> None:
    """The config and a history with a long and a short conversation."""
    paths = Paths.default()
    assert paths.config_file.is_relative_to(home)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(
        f'[providers.fake]\nkind = "openai"\nbase_url = "{base_url}"\n\n'
        f'[models.fake]\nprovider = "fake"\nid = "fake-model"\ncontext = {context}\n\n'
        "[network]\ndiscovery = false\nretries = 0\n",
        encoding="utf-8",
    )

    async def create() -> None:
        history = History(paths.history_db)
        await history.open()
        await history.close()

    asyncio.run(create())
    short, long = TITLES[1], TITLES[0]
    add_conversation(paths.history_db, short, 4)
    add_conversation(paths.history_db, long, messages)


def median_ms(values: list[float]) -> str:
    runs = ", ".join(f"{value * 1000:.0f}" for value in values)
    return f"median {statistics.median(values) * 1000:.0f} ms (runs: {runs})"


def bench(args: argparse.Namespace) -> list[str]:
    newest = numbered_text(args.messages - 1).split("**")[0] + "answer " + str(args.messages - 1)
    before_newest = "answer " + str(args.messages - 3)
    server = FakeOpenAIServer().start()
    server.behaviour.context_limit = args.context
    server.behaviour.tokens = 8
    report: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="muxtui-chat-long-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            env = isolated_env(home)
            os.environ.update({k: v for k, v in env.items() if k.startswith(("XDG_", "HOME"))})
            prepare(home, server.base_url, args.messages, args.context)
            command = (
                f"cd {shlex.quote(str(REPO_ROOT))} && exec {shlex.quote(sys.executable)} -m muxtui"
            )
            env["PYTHONPATH"] = str(REPO_ROOT)
            subprocess.run(
                [
                    *TMUX,
                    "new-session",
                    "-d",
                    "-s",
                    SESSION,
                    "-x",
                    str(WIDTH),
                    "-y",
                    str(HEIGHT),
                    command,
                ],
                env=env,
                check=True,
            )
            wait_for(lambda text: "two thousand" in text, "the conversation list")
            pid = app_pid()
            # Memory first: the short conversation (the same kind of Markdown, code included)
            # is opened once so that what any first reply loads (Markdown, highlighting) is in
            # the figure before, not in the growth.
            select(TITLES[1])
            keys("Enter")
            wait_for(lambda text: "answer 3" in text, "the short one")
            new_chat()
            rss_before = settle(pid, 2.0)
            new_chat()
            select("two thousand")
            keys("Enter")
            wait_for(lambda text: newest in text, "the newest")
            for _burst in range(5):
                keys(*["PageUp"] * 20)
                settle(pid, 0.3)
            rss_viewing = settle(pid)
            # On up to the first message: every message mounted and released once.
            first = numbered_text(0)
            bursts = 5
            while first not in screen() and bursts < BURSTS_AT_MOST:
                keys(*["PageUp"] * 20)
                settle(pid, 0.3)
                bursts += 1
            rss_all = settle(pid)
            keys("C-End")
            settle(pid, 0.3)
            new_chat()
            time.sleep(3)
            rss_after = settle(pid)

            opens: list[float] = []
            filled: list[float] = []
            shorts: list[float] = []
            for _run in range(args.runs):
                new_chat()
                select("two thousand")
                started = time.perf_counter()
                opens.append(
                    seconds_until(lambda: keys("Enter"), lambda t: newest in t, "the newest")
                )
                wait_for(lambda text: before_newest in text, "the screen filled")
                filled.append(time.perf_counter() - started)
                settle(pid, 0.5)
                new_chat()
                select("short four")
                shorts.append(
                    seconds_until(lambda: keys("Enter"), lambda t: "answer 3" in t, "the short one")
                )
                settle(pid, 0.5)

            def reply(where: str, label: str) -> tuple[float, int]:
                """One turn: seconds from Enter to the reply's first text; /tokenize calls."""
                new_chat()
                if where == "long":
                    select(TITLES[0])
                    keys("Enter")  # its newest messages are the turns before this one
                    wait_for(lambda text: f"— {TITLES[0]}" in text, "the open conversation")
                    settle(pid, 0.5)
                marker = f"r{label}x"
                server.behaviour.token_text = marker + " "
                typed = marker.upper()
                keys("ping " + typed)
                wait_for(lambda text: typed in text, "the typed prompt")
                counted = server.tokenize_requests
                took = seconds_until(lambda: keys("Enter"), lambda t: f"{marker} " in t, "reply")
                settle(pid, 0.5)
                return took, server.tokenize_requests - counted

            reply("empty", "warm")  # the app's first request of all
            # The first turns in the long conversation count its messages with the server's
            # tokenizer, newest first, at most 64 a turn, until the window is covered.
            counting: list[tuple[float, int]] = []
            for turn in range(COUNTING_TURNS_AT_MOST):
                took, calls = reply("long", f"c{turn}")
                counting.append((took, calls))
                if calls == 0:
                    break
            long_turns: list[float] = []
            empty_turns: list[float] = []
            for run in range(args.runs):
                for where in ("long", "empty") if run % 2 == 0 else ("empty", "long"):
                    took, _calls = reply(where, f"{run}{where[0]}")
                    (long_turns if where == "long" else empty_turns).append(took)
            subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)
    finally:
        server.stop()
        subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)

    mib = 2**20
    open_median = statistics.median(opens)
    verdict = "met" if open_median <= OPEN_TARGET_S else "NOT met"
    difference = statistics.median(long_turns) - statistics.median(empty_turns)
    report += [
        f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  tmux {WIDTH}x{HEIGHT}  "
        f"conversation of {args.messages} messages, context window {args.context} tokens",
        f"open, to the newest message on screen   {median_ms(opens)}  "
        f"(target <= {OPEN_TARGET_S * 1000:.0f} ms: {verdict})",
        f"open, to the screen filled              {median_ms(filled)}",
        f"open a 4-message conversation           {median_ms(shorts)}",
        f"RSS before {rss_before / mib:.1f} MiB, viewing (100 pages up) {rss_viewing / mib:.1f} "
        f"MiB (+{(rss_viewing - rss_before) / mib:.1f}, target <= {RSS_TARGET_MIB}), "
        f"after scrolling up to the first message ({bursts * 20} pages) {rss_all / mib:.1f} MiB "
        f"(+{(rss_all - rss_before) / mib:.1f}), after leaving it {rss_after / mib:.1f} MiB "
        f"(+{(rss_after - rss_before) / mib:.1f})",
        f"reply, first text: empty chat          {median_ms(empty_turns)}",
        f"reply, first text: long conversation   {median_ms(long_turns)}  "  # counted
        f"difference {difference * 1000:+.0f} ms (target <= {REPLY_TARGET_MS} ms)",
        "reply, first text: long conversation, its first turns (ms, /tokenize calls): "
        + ", ".join(f"{took * 1000:.0f} ({calls})" for took, calls in counting),
    ]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("chat_long.py needs tmux on PATH", file=sys.stderr)
        return 2
    print("\n".join(bench(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
