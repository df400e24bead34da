"""`muxtui batch` as a real subprocess: results, exit statuses, one-line errors, kills, resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.batch.output import OutputPaths
from tests.batch_support import assert_each_once, ids, prompts, records, write_jsonl
from tests.conftest import MUXTUI, muxtui_env
from tests.fake_server import FakeOpenAIServer

WriteConfig = Callable[..., Path]


def config_for(write_config: WriteConfig, base_url: str) -> Path:
    return write_config(
        f"""
[network]
discovery = false

[providers.fake]
base_url = "{base_url}"

[models.little]
provider = "fake"
id = "fake-model"
"""
    )


def batch_argv(config: Path, *args: str) -> list[str]:
    return [*MUXTUI, "--config", str(config), "batch", *args]


def batch(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batch_argv(config, *args),
        capture_output=True,
        text=True,
        env=muxtui_env(),
        timeout=120,
        check=False,
    )


def test_batch_writes_results_a_progress_bar_and_a_summary(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    result = batch(config_for(write_config, fake_server.base_url), str(source), "-m", "little")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    bar = lines[0]
    assert "30/30" in bar and "items/s" in bar and "tok/s" in bar and "ETA" in bar
    assert (
        lines[1]
        == "muxtui: little: 10 at once, from [network] max_connections (--concurrency sets it)"
    )
    assert lines[-1].startswith("muxtui: batch finished: 30 ok in ")
    assert lines[-1].endswith(f"→ {tmp_path / 'in.results.jsonl'}")
    assert_each_once({f"r{n}" for n in range(30)}, tmp_path / "in.results.jsonl")
    assert not (tmp_path / "in.results.errors.jsonl").exists()
    assert (tmp_path / "in.results.jsonl").stat().st_mode & 0o777 == 0o600


def test_some_failed_items_exit_1_and_the_summary_names_the_error_file(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*prompts(3), "{broken"])
    output = tmp_path / "out" / "res.jsonl"
    output.parent.mkdir()
    config = config_for(write_config, fake_server.base_url)
    result = batch(config, str(source), "-m", "little", "-o", str(output), "--ordered")
    assert result.returncode == 1, result.stderr
    errors = output.with_name("res.errors.jsonl")
    assert f"3 ok, 1 failed (see {errors})" in result.stderr.splitlines()[-1]
    assert ids(output) == ["r0", "r1", "r2"]
    assert ids(errors) == ["line-4"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["missing.jsonl", "-m", "little"], "missing.jsonl does not exist; check the path"),
        ("bad-bytes", ["bad.txt", "-m", "little"], "bad.txt line 2 is not UTF-8 text (byte 0xff)"),
        ("good", ["in.jsonl", "-m", "nope"], "unknown model 'nope'"),
        ("good", ["in.jsonl", "-m", "little", "-o", "in.jsonl/x.jsonl"], "is not a folder"),
        ("good", ["in.jsonl", "-m", "little", "-c", "0"], "--concurrency must be 1 or more"),
        ("good", ["in.jsonl", "-m", "little", "-t", "no field"], "names no field"),
        ("good", ["in.jsonl", "-m", "little", "-o", "in.jsonl"], "would overwrite the input"),
        ("bad-model", ["in.jsonl"], "no item has a usable model: unknown model 'gone'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(
    fake_server: FakeOpenAIServer,
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    args: list[str],
    message: str,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if setup == "good":
        write_jsonl(work / "in.jsonl", prompts(2))
    elif setup == "bad-model":
        write_jsonl(work / "in.jsonl", prompts(2, model="gone"))
    elif setup == "bad-bytes":
        (work / "bad.txt").write_bytes(b"ok\n\xff oops\n")
    before = sorted(path.name for path in work.iterdir())
    monkeypatch.chdir(work)
    result = batch(config_for(write_config, fake_server.base_url), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("muxtui: ") and message in result.stderr
    assert sorted(path.name for path in work.iterdir()) == before
    assert fake_server.chat_requests == 0


def test_sigkill_at_random_points_then_rerun_leaves_every_id_exactly_once(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, tmp_path: Path
) -> None:
    fake_server.behaviour.first_byte_delay = 0.004
    fake_server.behaviour.fail_rate = 0.05
    count = 400
    source = write_jsonl(tmp_path / "in.jsonl", prompts(count))
    config = config_for(write_config, fake_server.base_url)
    argv = batch_argv(config, str(source), "-m", "little", "-c", "8")
    paths = OutputPaths.beside(tmp_path / "in.results.jsonl")
    chooser = random.Random(1234)
    progress_seen = []
    for _ in range(4):
        process = subprocess.Popen(
            argv, env=muxtui_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        before = len(records(paths.results))
        deadline = time.monotonic() + 30
        wanted = before + chooser.randint(5, 60)  # die after a random number of new results
        while time.monotonic() < deadline and process.poll() is None:
            if paths.results.exists() and paths.results.read_bytes().count(b"\n") >= wanted:
                break
            time.sleep(0.002)
        time.sleep(chooser.random() * 0.05)  # and at a random instant after that
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        _check_no_duplicates(paths)
        progress_seen.append(paths.results.read_bytes().count(b"\n"))
    assert progress_seen[-1] < count, "the kills came too late to interrupt anything"
    final = subprocess.run(argv, env=muxtui_env(), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert_each_once({f"r{n}" for n in range(count)}, paths.results, paths.errors)


def _check_no_duplicates(paths: OutputPaths) -> None:
    """Between kills: whole lines only (a torn last line is allowed), no id twice."""
    raw = paths.results.read_bytes() if paths.results.exists() else b""
    complete = raw[: raw.rfind(b"\n") + 1]
    seen = [line for line in complete.splitlines() if line]
    custom_ids = [line.split(b'"custom_id":', 1)[1].split(b",", 1)[0] for line in seen]
    assert len(custom_ids) == len(set(custom_ids))


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(
    fake_server: FakeOpenAIServer, write_config: WriteConfig, tmp_path: Path
) -> None:
    fake_server.behaviour.first_byte_delay = 0.02
    source = write_jsonl(tmp_path / "in.jsonl", prompts(300))
    argv = batch_argv(config_for(write_config, fake_server.base_url), str(source), "-m", "little")
    paths = OutputPaths.beside(tmp_path / "in.results.jsonl")
    process = subprocess.Popen(
        [*argv, "-c", "4"], env=muxtui_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(records(paths.results)) < 10:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("muxtui: batch cancelled with ") and "run the same command" in last
    finished = ids(paths.results)  # whole lines only: `records` fails on a torn one
    assert 10 <= len(finished) < 300
    fake_server.reset_counters()
    again = subprocess.run(argv, env=muxtui_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert fake_server.chat_requests == 300 - len(finished)
    assert_each_once({f"r{n}" for n in range(300)}, paths.results, paths.errors)
