"""Batch inputs: every bad line becomes an error record naming its line; CSV and text templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from muxtui.engine.batch.inputs import InputFormat, Item, Problem, detect_format, read_items
from muxtui.engine.batch.output import OutputPaths
from muxtui.engine.batch.runner import BatchSpec
from muxtui.engine.config import Config
from muxtui.engine.core import Engine
from muxtui.engine.errors import UsageError
from muxtui.engine.retry import RetryPolicy
from tests.batch_support import FAST, batch_config, records, sent_prompts, write_jsonl
from tests.fake_server import FakeOpenAIServer

Engines = Callable[[Config, RetryPolicy], Engine]

# (line, error code, words in the message)
BAD_LINES: list[tuple[object, str, str]] = [
    ("{not json", "invalid_json", "not valid JSON"),
    (
        {"custom_id": "batch-no-body", "method": "POST", "url": "/v1/chat/completions"},
        "missing_body",
        "needs a `body` object",
    ),
    ({"custom_id": "no-prompt", "temperature": 0}, "missing_body", "no body, prompt or messages"),
    ({"custom_id": "dup", "prompt": "again"}, "duplicate_custom_id", "first on line 2"),
    (
        {"custom_id": "who", "prompt": "hi", "model": "nope"},
        "unknown_model",
        "unknown model 'nope'",
    ),
    (
        {"custom_id": "url", "url": "/v1/embeddings", "body": {}},
        "unsupported_url",
        "/v1/embeddings",
    ),
    ({"custom_id": "streamed", "prompt": "hi", "stream": True}, "invalid_line", "not streamed"),
    ("[1, 2]", "invalid_line", "expected a JSON object"),
    ({"custom_id": 12, "prompt": "hi"}, "invalid_line", "custom_id must be a non-empty string"),
]


async def test_each_bad_line_becomes_an_error_record_with_its_line_and_the_rest_run(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    rows: list[object] = [
        {"custom_id": "first", "prompt": "one"},
        {"custom_id": "dup", "prompt": "x"},
    ]
    rows += [line for line, _, _ in BAD_LINES]
    rows.append({"custom_id": "last", "prompt": "two"})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    engine = engines(batch_config(fake_server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source))
    paths = OutputPaths.beside(summary.output)
    assert sorted(record["custom_id"] for record in records(paths.results)) == [
        "dup",
        "first",
        "last",
    ]
    errors = records(paths.errors)
    assert len(errors) == len(BAD_LINES)
    for record, (_, code, words), line in zip(errors, BAD_LINES, range(3, 99), strict=False):
        error = record["error"]
        assert (error["code"], error["line"]) == (code, line), record
        assert error["message"].startswith(f"line {line}: ") and words in error["message"]
        assert record["response"] is None
    assert errors[0]["custom_id"] == "line-3"  # no id could be read: the line names it
    assert errors[3]["custom_id"] == "line-6"  # the repeated id stays with its first line
    assert summary.exit_status == 1 and summary.progress.failed == len(BAD_LINES)


async def test_a_template_naming_a_field_a_line_lacks_is_that_line_s_error(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    rows = [{"text": "alpha"}, {"body_text": "beta"}, {"text": "gamma", "custom_id": "g"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    engine = engines(batch_config(fake_server.base_url), FAST)
    summary = await engine.run_batch(BatchSpec(source, model="m", template="Summarise: {text}"))
    paths = OutputPaths.beside(summary.output)
    assert sorted(sent_prompts(fake_server)) == ["Summarise: alpha", "Summarise: gamma"]
    assert sorted(r["custom_id"] for r in records(paths.results)) == ["g", "line-1"]
    (error,) = records(paths.errors)
    assert error["custom_id"] == "line-2"
    assert error["error"]["code"] == "missing_column" and error["error"]["line"] == 2
    assert "needs {text}" in error["error"]["message"]


async def test_csv_rows_fill_the_template_and_get_their_line_as_id(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    source = tmp_path / "docs.csv"
    source.write_text(
        'title,text\nFirst,"a, quoted\nmultiline text"\nSecond,plain\nShort\n', encoding="utf-8"
    )
    engine = engines(batch_config(fake_server.base_url), FAST)
    summary = await engine.run_batch(
        BatchSpec(source, model="m", template="Summarise {title}: {text}", ordered=True)
    )
    assert summary.output == tmp_path / "docs.results.jsonl"
    paths = OutputPaths.beside(summary.output)
    assert [r["custom_id"] for r in records(paths.results)] == ["line-2", "line-4"]
    assert sorted(sent_prompts(fake_server)) == [
        "Summarise First: a, quoted\nmultiline text",
        "Summarise Second: plain",
    ]
    (error,) = records(paths.errors)  # the short row has no text
    assert (error["custom_id"], error["error"]["code"], error["error"]["line"]) == (
        "line-5",
        "missing_column",
        5,
    )


async def test_text_lines_are_prompts_with_an_optional_template(
    fake_server: FakeOpenAIServer, engines: Engines, tmp_path: Path
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("\ufeffWhy is the sky blue?\n\n  \nWhat is 2+2?\r\n", encoding="utf-8")
    engine = engines(batch_config(fake_server.base_url), FAST)
    plain = await engine.run_batch(BatchSpec(source, model="m", ordered=True))
    assert [r["custom_id"] for r in records(plain.output)] == ["line-1", "line-4"]
    assert sorted(sent_prompts(fake_server)) == ["What is 2+2?", "Why is the sky blue?"]
    fake_server.reset_counters()
    templated = tmp_path / "templated.results.jsonl"
    await engine.run_batch(
        BatchSpec(source, model="m", template="Answer briefly: {text}", output=templated)
    )
    assert sorted(sent_prompts(fake_server)) == [
        "Answer briefly: What is 2+2?",
        "Answer briefly: Why is the sky blue?",
    ]


def test_inputs_that_cannot_work_at_all_are_one_error(tmp_path: Path) -> None:
    source = tmp_path / "docs.csv"
    source.write_text("title,text\nA,b\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"uses \{body\}, which .* has no column.*title, text"):
        list(read_items(source, InputFormat.CSV, "Summarise {body}"))
    with pytest.raises(UsageError, match="needs --template naming its columns"):
        list(read_items(source, InputFormat.CSV))
    text = tmp_path / "p.txt"
    text.write_text("hello\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"a text input has one field, \{text\}"):
        list(read_items(text, InputFormat.TEXT, "{question}"))
    with pytest.raises(UsageError, match="names no field"):
        list(read_items(text, InputFormat.TEXT, "no fields here"))
    with pytest.raises(UsageError, match="must be a plain column name"):
        list(read_items(text, InputFormat.TEXT, "{text.__class__}"))


def test_formats_come_from_the_name_or_the_first_bytes(tmp_path: Path) -> None:
    sniffed = tmp_path / "requests.data"
    sniffed.write_text('{"prompt": "x"}\n', encoding="utf-8")
    other = tmp_path / "notes.data"
    other.write_text("a prompt\n", encoding="utf-8")
    assert detect_format(tmp_path / "a.jsonl") is InputFormat.JSONL
    assert detect_format(tmp_path / "a.csv") is InputFormat.CSV
    assert detect_format(tmp_path / "a.txt") is InputFormat.TEXT
    assert detect_format(sniffed) is InputFormat.JSONL
    assert detect_format(other) is InputFormat.TEXT


def test_prompt_lines_keep_their_parameters_and_messages(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"prompt": "p", "system": "be brief", "max_tokens": 5, "parameters": {"seed": 1}},
            {"messages": [{"role": "user", "content": "m"}], "model": "x", "top_p": 0.9},
        ],
    )
    first, second = read_items(source, InputFormat.JSONL)
    assert first == Item(
        1,
        "line-1",
        None,
        {
            "max_tokens": 5,
            "seed": 1,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "p"},
            ],
        },
    )
    assert isinstance(second, Item) and not isinstance(second, Problem)
    assert (second.model, second.body["top_p"]) == ("x", 0.9)
