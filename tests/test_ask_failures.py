"""`muxtui ask` as a real subprocess on the paths a hostile probe found: bad bytes, cut streams,
echoed secrets, local config mistakes and data dirs that cannot be used."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.paths import Paths
from tests.conftest import MUXTUI, muxtui_env, permission_bits_enforced
from tests.fake_server import Failure, FakeOpenAIServer
from tests.test_ask_cli import ask, fake_config

WriteConfig = Callable[..., Path]


def ask_bytes(
    config: Path, *args: bytes, stdin: bytes | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`muxtui ask` with raw bytes as arguments and stdin, as a shell would pass them."""
    argv = [*(prefix or []), *map(os.fsencode, MUXTUI), b"--config", os.fsencode(config), b"ask"]
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        input=stdin,
        env=muxtui_env(),
        timeout=60,
        check=False,
    )


def stored(paths: Paths, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(paths.history_db) as db:
        return db.execute(sql).fetchall()


# --- undecodable input ---------------------------------------------------------------------


def test_invalid_utf8_in_argv_becomes_replacement_characters(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    result = ask_bytes(config, b"-m", b"little", b"caf\xe9 \xff ok")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"tok tok tok tok tok \n"
    sent = fake_server.requests[-1].json["messages"]  # type: ignore[index]
    assert sent == [{"role": "user", "content": "caf\ufffd \ufffd ok"}]
    assert stored(paths, "SELECT content FROM messages WHERE role = 'user'") == [
        ("caf\ufffd \ufffd ok",)
    ]


def test_invalid_utf8_on_stdin_becomes_replacement_characters(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    result = ask_bytes(config, b"-m", b"little", b"-", stdin=b"\x00\xff\xfebinary \xc3\xa9\n")
    assert (result.returncode, result.stderr) == (0, b"")
    assert stored(paths, "SELECT content FROM messages WHERE role = 'user'") == [
        ("\x00\ufffd\ufffdbinary é\n",)
    ]


# --- a stream that just stops ----------------------------------------------------------------


def test_a_stream_ending_without_done_or_finish_is_a_truncated_reply(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    fake_server.fail_next(Failure(end_after_tokens=2))
    result = ask(fake_config(write_config, fake_server.base_url), "-m", "little", "hi")
    assert result.returncode == 2
    assert result.stdout == "tok tok \n"
    [line] = result.stderr.splitlines()
    assert line.startswith("muxtui: fake: the reply was cut off after 8 characters")
    assert "partial reply was kept" in line
    assert stored(paths, "SELECT content, status FROM messages WHERE role = 'assistant'") == [
        ("tok tok ", "truncated")
    ]
    assert fake_server.chat_requests == 1  # text had arrived: never silently retried


# --- secrets the server echoes -----------------------------------------------------------------

HEADER_SECRET = "hdr-secret-0123456789"


@pytest.mark.parametrize("status", [400, 500])
def test_a_header_secret_echoed_in_an_error_reaches_neither_stderr_nor_history(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths, status: int
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    config.write_text(
        config.read_text() + f'\n[providers.fake.headers]\nX-Api-Key = "{HEADER_SECRET}"\n'
    )
    fake_server.fail_next(*[Failure(status=status, echo_header="X-Api-Key")] * 2)
    result = ask(config, "-v", "-m", "little", "hi")
    assert fake_server.requests[-1].headers["x-api-key"] == HEADER_SECRET  # it was sent
    assert result.returncode == 2
    assert "header X-Api-Key: **** is not accepted here" in result.stderr.splitlines()[-1]
    assert HEADER_SECRET not in result.stderr + result.stdout
    errors = stored(paths, "SELECT error FROM messages WHERE role = 'assistant'")
    assert errors and "****" in str(errors[0][0])
    history = b"".join(p.read_bytes() for p in paths.data_dir.iterdir() if p.is_file())
    assert HEADER_SECRET.encode() not in history


def test_config_output_masks_headers_env_and_cmd_secrets(write_config: WriteConfig) -> None:
    config = write_config(
        f"""
[providers.box]
base_url = "http://127.0.0.1:9/v1"
headers = {{ Authorization = "Bearer {HEADER_SECRET}", X-Title = "my-app" }}

[local.q]
cmd = "llama-server -m {{path}} --port {{port}} --api-key cmd-secret-0000 --hf-token=hf_s3cret99"
path = "/m/q.gguf"
env = {{ HF_TOKEN = "hf_env_secret_1", CUDA_VISIBLE_DEVICES = "0" }}
"""
    )
    result = subprocess.run(
        [*MUXTUI, "--config", str(config), "config"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for secret in (HEADER_SECRET, "cmd-secret-0000", "hf_s3cret99", "hf_env_secret_1"):
        assert secret not in result.stdout
    assert 'Authorization = "****"' in result.stdout
    assert 'X-Title = "my-app"' in result.stdout  # clearly not a secret: shown
    assert "--api-key **** --hf-token=****" in result.stdout
    assert 'CUDA_VISIBLE_DEVICES = "****"' in result.stdout


# --- local config mistakes are found before anything is recorded ------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('path = "{missing}"', "does not exist"),
        ('path = "{not_gguf}"', "is not a GGUF file"),
        ('cmd = "no-such-server-binary --port {{port}}"', "not found on PATH"),
    ],
)
def test_a_local_config_mistake_leaves_no_conversation(
    write_config: WriteConfig, paths: Paths, tmp_path: Path, entry: str, expected: str
) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("plain text, not a model")
    line = entry.format(missing=tmp_path / "absent.gguf", not_gguf=not_gguf)
    config = write_config(f"[network]\ndiscovery = false\n\n[local.broken]\n{line}\n")
    result = ask(config, "-m", "broken", "hi")
    assert result.returncode == 2
    [message] = result.stderr.splitlines()
    assert message.startswith("muxtui: local model 'broken': ") and expected in message
    assert stored(paths, "SELECT COUNT(*) FROM conversations") == [(0,)]


# --- data dirs ---------------------------------------------------------------------------------


def test_a_data_dir_that_cannot_be_created_is_one_line(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data dir's parent should be")
    config = fake_config(write_config, fake_server.base_url)
    result = subprocess.run(
        [*MUXTUI, "--config", str(config), "ask", "-m", "little", "hi"],
        capture_output=True,
        text=True,
        env=muxtui_env(XDG_DATA_HOME=str(blocker)),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert str(blocker / "muxtui") in line
    assert "XDG_DATA_HOME" in line and "Traceback" not in result.stderr
    assert fake_server.chat_requests == 0


def test_a_read_only_data_dir_says_so_and_not_move_it_aside(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    config = fake_config(write_config, fake_server.base_url)
    assert ask(config, "-m", "little", "first").returncode == 0  # the DB now exists
    before = paths.history_db.read_bytes()
    paths.data_dir.chmod(0o500)
    paths.history_db.chmod(0o400)
    try:
        prefix = [os.fsencode(part) for part in permission_bits_enforced()]
        result = ask_bytes(config, b"-m", b"little", b"second", prefix=prefix)
    finally:
        paths.data_dir.chmod(0o700)
        paths.history_db.chmod(0o600)
    assert result.returncode == 2
    [line] = result.stderr.decode().splitlines()
    assert "not writable" in line and str(paths.data_dir) in line
    assert "move it aside" not in line
    assert "XDG_DATA_HOME" in line
    assert paths.history_db.read_bytes() == before


def test_history_files_are_private_in_a_pre_existing_open_data_dir(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, paths: Paths
) -> None:
    paths.data_dir.mkdir(parents=True, mode=0o755)
    paths.data_dir.chmod(0o755)
    config = fake_config(write_config, fake_server.base_url)
    old_umask = os.umask(0o022)
    try:
        assert ask(config, "-m", "little", "first").returncode == 0
        # A DB left world-readable by an older muxtui is made private too.
        for name in os.listdir(paths.data_dir):
            (paths.data_dir / name).chmod(0o644)
        paths.data_dir.chmod(0o755)
        assert ask(config, "-m", "little", "second").returncode == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(paths.data_dir.stat().st_mode) == 0o700
    names = sorted(os.listdir(paths.data_dir))
    assert "history.sqlite3" in names
    for name in names:
        mode = stat.S_IMODE((paths.data_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
