"""The batch runner against real loopback servers: retries, spread, order, resume, sizing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.batch.output import OutputPaths
from muxtui.engine.batch.runner import BatchSpec
from muxtui.engine.config import Config
from muxtui.engine.core import Engine
from muxtui.engine.errors import UnknownModelError, UsageError
from muxtui.engine.events import BatchProgress, BatchState
from muxtui.engine.retry import RetryPolicy
from tests.batch_support import (
    FAST,
    assert_each_once,
    batch_config,
    ids,
    prompts,
    records,
    sent_prompts,
    write_jsonl,
)
from tests.fake_server import Failure, FakeOpenAIServer

Engines = Callable[[Config, RetryPolicy], Engine]


@pytest.fixture
def server() -> FakeOpenAIServer:
    """A loopback server that serves two model ids."""
    started = FakeOpenAIServer(models=("fake-model", "other-model")).start()
    yield started  # type: ignore[misc]
    started.stop()


async def test_1000_items_with_injected_429_and_503_all_succeed(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.fail_rate = 0.1
    source = write_jsonl(tmp_path / "in.jsonl", prompts(1000))
    engine = engines(batch_config(server.base_url), FAST)
    progress: list[BatchProgress] = []
    summary = await engine.run_batch(
        BatchSpec(source, model="m", concurrency=16), on_progress=progress.append
    )
    paths = OutputPaths.beside(summary.output)
    assert summary.exit_status == 0
    assert len(records(paths.results)) == 1000
    assert records(paths.errors) == []
    assert_each_once({f"r{n}" for n in range(1000)}, paths.results, paths.errors)
    assert server.injected_failures >= 50  # the retries were really exercised
    assert server.chat_requests == 1000 + server.injected_failures
    first = records(paths.results)[0]
    assert set(first) == {"id", "custom_id", "response", "error"}
    assert first["error"] is None and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    final = progress[-1]
    assert (final.state, final.succeeded, final.failed, final.in_flight) == (
        BatchState.FINISHED,
        1000,
        0,
        0,
    )


async def test_bodies_are_forwarded_as_given(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hé ✓"}],
        "temperature": 0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n\n"],
        "response_format": {"type": "json_schema", "json_schema": {"b": 1, "a": 2}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "x_vendor_field": {"nested": [1, 2.5, None, True]},
    }
    line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions", "body": body}
    source = write_jsonl(tmp_path / "in.jsonl", [line])
    engine = engines(batch_config(server.base_url), FAST)
    await engine.run_batch(BatchSpec(source))
    (sent,) = [request for request in server.requests if request.method == "POST"]
    assert sent.json == {**body, "model": "fake-model"}  # only the model id is resolved
    assert list(sent.json["response_format"]["json_schema"]) == ["b", "a"]  # order kept


async def test_two_endpoints_for_one_model_both_receive_work(
    engines: Engines, tmp_path: Path
) -> None:
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        for server in (first, second):
            server.behaviour.first_byte_delay = 0.01
        source = write_jsonl(tmp_path / "in.jsonl", prompts(80))
        config = batch_config([first.base_url, second.base_url])
        summary = await engines(config, FAST).run_batch(BatchSpec(source, concurrency=8))
        assert first.chat_requests >= 20 and second.chat_requests >= 20
        assert first.chat_requests + second.chat_requests == 80
        assert_each_once({f"r{n}" for n in range(80)}, summary.output)


async def test_ordered_writes_results_and_errors_in_input_order(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.fail_rate = 0.3  # retries finish items out of order
    rows: list[object] = list(prompts(60))
    rows[10] = "{not json"
    rows[40] = {"custom_id": "no-body", "url": "/v1/chat/completions"}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    engine = engines(batch_config(server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m", concurrency=8, ordered=True))
    paths = OutputPaths.beside(summary.output)
    expected = [f"r{n}" for n in range(60) if n not in (10, 40)]
    assert ids(paths.results) == expected
    assert ids(paths.errors) == ["line-11", "no-body"]


async def test_a_changed_body_or_model_is_redone_and_reported(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    rows = prompts(5, model="m")
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    config = batch_config(server.base_url, models={"m": "fake-model", "o": "other-model"})
    engine = engines(config, FAST)
    first = await engine.run_batch(BatchSpec(source))
    assert server.chat_requests == 5
    rows[1]["prompt"] = "a changed question"
    rows[3]["model"] = "o"
    write_jsonl(source, rows)
    server.reset_counters()
    again = await engine.run_batch(BatchSpec(source))
    assert server.chat_requests == 2
    sent = sorted(
        (request.json["messages"][-1]["content"], request.json["model"])
        for request in server.requests
        if request.method == "POST"
    )
    assert sent == [("a changed question", "fake-model"), ("question 3", "other-model")]
    assert any("2 item(s) changed" in note and "r1, r3" in note for note in again.notes)
    assert again.progress.skipped == 3
    assert_each_once({f"r{n}" for n in range(5)}, first.output)
    by_id = {record["custom_id"]: record for record in records(first.output)}
    assert by_id["r3"]["response"]["body"]["model"] == "other-model"
    server.reset_counters()
    await engine.run_batch(BatchSpec(source))  # nothing changed now: nothing is sent
    assert server.chat_requests == 0


async def test_rerun_repairs_a_torn_line_and_sends_only_what_is_missing(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    engine = engines(batch_config(server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m"))
    lines = summary.output.read_bytes().splitlines(keepends=True)
    kept = lines[:12]
    summary.output.write_bytes(b"".join(kept) + lines[12][: len(lines[12]) // 2])  # torn
    lost = {json.loads(line)["custom_id"] for line in lines[12:]}
    server.reset_counters()
    again = await engine.run_batch(BatchSpec(source, model="m"))
    assert {f"question {n[1:]}" for n in lost} == set(sent_prompts(server))
    assert any("torn" in note for note in again.notes)
    assert_each_once({f"r{n}" for n in range(20)}, summary.output)


async def test_failed_items_are_recorded_once_and_tried_again_on_rerun(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.fail_next(Failure(status=400), Failure(status=400))  # permanent: never retried
    source = write_jsonl(tmp_path / "in.jsonl", prompts(6))
    engine = engines(batch_config(server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m", concurrency=1))
    paths = OutputPaths.beside(summary.output)
    assert summary.exit_status == 1 and server.chat_requests == 6
    errors = records(paths.errors)
    assert [record["error"]["code"] for record in errors] == ["bad_request", "bad_request"]
    assert all(record["response"] is None for record in errors)
    assert [record["error"]["line"] for record in errors] == [1, 2]
    server.reset_counters()
    again = await engine.run_batch(BatchSpec(source, model="m"))
    assert again.exit_status == 0 and server.chat_requests == 2
    assert records(paths.errors) == []
    assert_each_once({f"r{n}" for n in range(6)}, paths.results, paths.errors)


async def test_cancel_stops_cleanly_and_a_rerun_finishes_without_duplicates(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.first_byte_delay = 0.02
    source = write_jsonl(tmp_path / "in.jsonl", prompts(200))
    engine = engines(batch_config(server.base_url), FAST)
    job = engine.start_batch(BatchSpec(source, model="m", concurrency=4))
    output = OutputPaths.beside(tmp_path / "in.results.jsonl")
    for _ in range(500):
        if len(records(output.results)) >= 20:
            break
        await asyncio.sleep(0.01)
    job.cancel()
    assert await job.wait() is None
    assert job.progress.state is BatchState.CANCELLED
    done_before = set(ids(output.results))
    assert 20 <= len(done_before) < 200
    server.reset_counters()
    summary = await engine.run_batch(BatchSpec(source, model="m", concurrency=8))
    assert server.chat_requests == 200 - len(done_before)
    assert summary.progress.skipped == len(done_before)
    assert_each_once({f"r{n}" for n in range(200)}, output.results, output.errors)


async def test_a_batch_of_16_opens_16_connections(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.first_byte_delay = 0.02
    source = write_jsonl(tmp_path / "in.jsonl", prompts(96))
    config = batch_config(server.base_url)
    assert config.network.max_connections == 10  # the default the batch must not be held to
    await engines(config, FAST).run_batch(BatchSpec(source, model="m", concurrency=16))
    assert server.connections_accepted == 16
    assert server.max_in_flight == 16


async def test_default_concurrency_comes_from_the_servers_slots(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.total_slots = 3
    server.behaviour.first_byte_delay = 0.02
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    summary = await engines(batch_config(server.base_url), FAST).run_batch(
        BatchSpec(source, model="m")
    )
    assert server.max_in_flight == 3
    assert summary.progress.concurrency == 3
    assert any("3 at once, from the slots its server reports" in note for note in summary.notes)


async def test_a_provider_connection_limit_caps_concurrency_and_says_so(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.first_byte_delay = 0.02
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    config = batch_config(server.base_url, max_connections=2)
    summary = await engines(config, FAST).run_batch(BatchSpec(source, model="m", concurrency=8))
    assert server.max_in_flight == 2
    assert any("2 at once, not 8" in note and "max_connections" in note for note in summary.notes)


async def test_inputs_nothing_can_run_from_are_refused_before_anything_is_written(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(batch_config(server.base_url), FAST)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3, model="nope"))
    with pytest.raises(UsageError, match="no item has a usable model: unknown model 'nope'"):
        await engine.run_batch(BatchSpec(source))
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        await engine.run_batch(BatchSpec(source, model="nope"))
    with pytest.raises(UsageError, match=r"missing\.jsonl does not exist"):
        await engine.run_batch(BatchSpec(tmp_path / "missing.jsonl", model="m"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(UsageError, match="line 2 is not UTF-8"):
        await engine.run_batch(BatchSpec(bad, model="m"))
    with pytest.raises(UsageError, match="nowhere does not exist; create the folder"):
        await engine.run_batch(BatchSpec(source, model="m", output=tmp_path / "nowhere/o.jsonl"))
    assert server.chat_requests == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.txt", "home", "in.jsonl"]


async def test_a_second_run_on_the_same_output_is_refused_while_one_runs(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.behaviour.first_byte_delay = 0.05
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    engine = engines(batch_config(server.base_url), FAST)
    job = engine.start_batch(BatchSpec(source, model="m", concurrency=1))
    for _ in range(200):
        if job.progress.state is BatchState.RUNNING:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(UsageError, match="another batch is writing"):
        await engine.run_batch(BatchSpec(source, model="m"))
    job.cancel()
    await job.wait()


async def test_forward_chat_returns_the_reply_as_sent(
    server: FakeOpenAIServer, engines: Engines
) -> None:
    engine = engines(batch_config(server.base_url), FAST)
    body = {"model": "ignored", "messages": [{"role": "user", "content": "hi"}], "seed": 3}
    reply = await engine.forward_chat("m", body)
    assert reply.parsed["choices"][0]["message"]["content"] == "tok " * 5
    assert json.loads(reply.content) == reply.parsed
    assert server.requests[-1].json == {**body, "model": "fake-model"}


async def test_local_models_run_one_after_the_other_each_started_once(
    engines: Engines, tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    from muxtui.engine.config import load_config
    from muxtui.engine.events import ServerState, ServerStateChanged
    from tests.test_tui_support import local_entry

    text = local_entry("a", args="--total-slots 2") + local_entry("b", args="--total-slots 3")
    text += "[cache]\nmax_models = 1\n\n[network]\ndiscovery = false\n"
    config = load_config(write_config(text), must_exist=True)
    rows = [{"custom_id": f"r{n}", "prompt": "hi", "model": "ab"[n % 2]} for n in range(24)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)  # the models alternate line by line
    engine = engines(config, FAST)
    starts: list[str] = []
    engine.add_listener(
        lambda event: (
            starts.append(event.model)
            if isinstance(event, ServerStateChanged)
            and event.state is ServerState.STARTING
            and event.detail.startswith("starting on port")  # a process spawned
            else None
        )
    )
    summary = await engine.run_batch(BatchSpec(source))
    assert starts == ["a", "b"]  # a's items all ran before b's server replaced it
    assert summary.exit_status == 0
    assert_each_once({f"r{n}" for n in range(24)}, summary.output)
    assert any("a: 2 at once, from the slots" in note for note in summary.notes)
    assert any("b: 3 at once, from the slots" in note for note in summary.notes)
    models = {record["response"]["body"]["model"] for record in records(summary.output)}
    assert models == {"fake-model"}  # the local server's own model id was sent


async def test_retry_after_is_honoured_and_a_too_long_one_is_recorded_once(
    server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    server.fail_next(Failure(retry_after=0.05), Failure(retry_after=120))
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    engine = engines(batch_config(server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m", concurrency=1, ordered=True))
    paths = OutputPaths.beside(summary.output)
    # r0 waited the 0.05 s asked for, then was told 120 s: recorded once, not waited for.
    assert ids(paths.results) == ["r1"]
    (error,) = records(paths.errors)
    assert (error["custom_id"], error["error"]["code"]) == ("r0", "rate_limited")
    assert "asks to wait 120 s" in error["error"]["message"]
    assert server.chat_requests == 3


async def test_a_dead_endpoint_is_passed_over_and_every_item_succeeds(
    engines: Engines, tmp_path: Path
) -> None:
    with FakeOpenAIServer() as alive, socket.socket() as holder:
        # Bound but never listening: connections are refused, and no other process (a server
        # another test starts) can take the port meanwhile.
        holder.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{holder.getsockname()[1]}/v1"
        source = write_jsonl(tmp_path / "in.jsonl", prompts(40))
        config = batch_config([dead_url, alive.base_url])
        summary = await engines(config, FAST).run_batch(BatchSpec(source, concurrency=4))
        assert summary.exit_status == 0
        assert alive.chat_requests == 40
        assert_each_once({f"r{n}" for n in range(40)}, summary.output)
