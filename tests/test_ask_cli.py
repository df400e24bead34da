"""`muxtui ask` as a real subprocess against a loopback test server set up by a config file."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env
from tests.fake_server import Failure, FakeOpenAIServer

WriteConfig = Callable[..., Path]


def ask(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUXTUI, "--config", str(config), "ask", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=muxtui_env(),
        timeout=60,
        check=False,
    )


def fake_config(write_config: WriteConfig, base_url: str, extra: str = "") -> Path:
    return write_config(
        f"""
[network]
discovery = false
retries = 1

[providers.fake]
base_url = "{base_url}"

[models.little]
provider = "fake"
id = "fake-model"
{extra}
"""
    )


def test_ask_streams_the_reply_to_stdout_and_stores_the_turn(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    result = ask(fake_config(write_config, fake_server.base_url), "--model", "little", "hi")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "tok tok tok tok tok \n"
    assert fake_server.requests[-1].json["stream"] is True  # type: ignore[index]
    with sqlite3.connect(paths.history_db) as db:
        rows = db.execute(
            "SELECT role, content, status, model FROM messages ORDER BY id"
        ).fetchall()
    assert rows == [
        ("user", "hi", "complete", ""),
        ("assistant", "tok tok tok tok tok ", "complete", "little"),
    ]


def test_ask_reads_stdin_and_prints_stats_with_verbose(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    result = ask(config, "-v", "--no-stream", "--model", "little", "-", stdin="from stdin\n")
    assert result.returncode == 0
    assert result.stdout == "tok tok tok tok tok \n"
    assert fake_server.requests[-1].json["messages"] == [  # type: ignore[index]
        {"role": "user", "content": "from stdin\n"}
    ]
    assert fake_server.requests[-1].json["stream"] is False  # type: ignore[index]
    [stats] = result.stderr.splitlines()
    assert stats.startswith("muxtui: little via fake · first token ")
    assert "tok/s" in stats and "5 completion tokens" in stats


def test_max_tokens_caps_the_reply(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    result = ask(config, "-v", "--max-tokens", "2", "-m", "little", "hi")
    assert (result.returncode, result.stdout) == (0, "tok tok \n")
    assert fake_server.requests[-1].json["max_tokens"] == 2  # type: ignore[index]
    assert result.stderr.rstrip().endswith("ended: length")
    bad = ask(config, "--max-tokens", "0", "-m", "little", "hi")
    assert bad.returncode == 2 and bad.stderr.startswith("muxtui: ask: --max-tokens")


def test_ask_without_model_uses_the_last_used_one(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    config = fake_config(
        write_config, fake_server.base_url, '\n[ui]\nlast_model = "fake:fake-model"'
    )
    result = ask(config, "hello")
    assert (result.returncode, result.stdout) == (0, "tok tok tok tok tok \n")


def test_unknown_model_is_one_line_on_stderr_and_exit_2(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    result = ask(fake_config(write_config, fake_server.base_url), "--model", "nope", "hi")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("muxtui: unknown model 'nope' (known: little)")
    assert fake_server.requests == []
    with sqlite3.connect(paths.history_db) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone() == (0,)


def test_unreachable_provider_is_one_line_and_exit_2(write_config: WriteConfig) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    result = ask(fake_config(write_config, url), "--model", "little", "hi")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"muxtui: fake: cannot connect to {url} (connection refused); check")
    assert "Traceback" not in result.stderr


def test_a_rejected_key_is_one_line_without_the_key(write_config: WriteConfig) -> None:
    secret = "sk-in-the-config-file-0000"
    with FakeOpenAIServer(api_key="other") as server:
        config = fake_config(write_config, server.base_url)
        text = config.read_text().replace('base_url = "', f'api_key = "{secret}"\nbase_url = "', 1)
        config.write_text(text)
        result = ask(config, "--model", "little", "hi")
    assert result.returncode == 2
    assert result.stderr == (
        "muxtui: fake: the API key was rejected (401); check api_key in [providers.fake]\n"
    )
    assert secret not in result.stderr + result.stdout


def test_a_broken_stream_prints_the_partial_reply_and_one_error_line(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    fake_server.fail_next(Failure(drop_after_tokens=2))
    result = ask(fake_config(write_config, fake_server.base_url), "--model", "little", "hi")
    assert result.returncode == 2
    assert result.stdout == "tok tok \n"
    [line] = result.stderr.splitlines()
    assert line.startswith("muxtui: fake: the reply broke off after 8 characters")
    with sqlite3.connect(paths.history_db) as db:
        row = db.execute("SELECT content, status FROM messages WHERE role = 'assistant'").fetchone()
    assert row == ("tok tok ", "error")


@pytest.mark.parametrize(("prompt", "stdin"), [("   ", None), ("-", "")])
def test_an_empty_prompt_is_one_line_and_exit_2(
    write_config: WriteConfig, prompt: str, stdin: str | None
) -> None:
    result = ask(fake_config(write_config, "http://127.0.0.1:9/v1"), prompt, stdin=stdin)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("muxtui: ask: ") and "empty" in line


def test_the_turn_runs_in_process_too(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from muxtui.cli import main

    config = fake_config(write_config, fake_server.base_url)
    assert main(["--config", str(config), "ask", "-m", "little", "hi"]) == 0
    assert capsys.readouterr().out == "tok tok tok tok tok \n"


def test_continue_sends_the_most_recent_conversation_and_extends_it(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    assert ask(config, "-m", "little", "first question").returncode == 0
    assert ask(config, "-m", "little", "another chat").returncode == 0
    result = ask(config, "-m", "little", "--continue", "and then?")
    assert (result.returncode, result.stderr) == (0, "")
    assert fake_server.requests[-1].json["messages"] == [  # type: ignore[index]
        {"role": "user", "content": "another chat"},
        {"role": "assistant", "content": "tok tok tok tok tok "},
        {"role": "user", "content": "and then?"},
    ]
    with sqlite3.connect(paths.history_db) as db:
        counts = db.execute(
            "SELECT c.title, COUNT(m.id) FROM conversations c JOIN messages m "
            "ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.id"
        ).fetchall()
    assert counts == [("first question", 2), ("another chat", 4)]


def test_continue_with_no_conversation_yet_is_one_line(
    fake_server: FakeOpenAIServer, write_config: WriteConfig
) -> None:
    result = ask(fake_config(write_config, fake_server.base_url), "-m", "little", "-c", "hi")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("muxtui: ask: there is no conversation to continue")
    assert fake_server.chat_requests == 0
