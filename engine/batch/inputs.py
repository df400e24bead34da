"""Batch inputs, read a line at a time: OpenAI Batch JSONL, prompt JSONL, CSV and plain text.

Every line is checked on its own: a bad one becomes a `Problem` naming its line, the rest become
`Item`s. Nothing is held but the set of custom_ids seen, so memory stays flat as inputs grow.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from muxtui.engine.errors import UsageError

CHAT_URLS = frozenset({"/v1/chat/completions", "/chat/completions"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
_BATCH_KEYS = ("body", "url", "method")
# Keys of a prompt line that are not request parameters.
_OWN_KEYS = frozenset({"custom_id", "model", "prompt", "messages", "system", "parameters"})
_READ_BUFFER = 1 << 16


class InputFormat(StrEnum):
    """How an input file is read."""

    JSONL = "jsonl"
    CSV = "csv"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Item:
    """One request to send: its id, the model its line names, and its body without `model`."""

    line: int
    custom_id: str
    model: str | None  # None: the batch's model
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """A line that cannot be sent; it becomes a record in the error file."""

    line: int
    custom_id: str
    code: str
    message: str  # starts with "line N: " and ends with the fix


class InputError(UsageError):
    """The input as a whole cannot be read (missing, undecodable, a template that cannot work)."""


def detect_format(path: Path) -> InputFormat:
    """JSONL, CSV or text, from the file name; an unknown suffix is JSONL if it starts with `{`."""
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return InputFormat.JSONL
    if suffix == ".csv":
        return InputFormat.CSV
    if suffix in (".txt", ".text", ".md"):
        return InputFormat.TEXT
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise InputError(_unreadable(path, exc)) from None
    return InputFormat.JSONL if head.startswith(b"{") else InputFormat.TEXT


def template_fields(template: str) -> tuple[str, ...]:
    """The field names a prompt template uses; `InputError` if it is not a usable template."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"--template {template!r}: {exc}; write fields as {{name}}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise InputError(
                f"--template {template!r}: field {{{name}}} must be a plain column name, "
                "e.g. {text}; double a brace ({{ or }}) to write it literally"
            )
        fields.append(name)
    if not fields:
        raise InputError(
            f"--template {template!r} names no field, so every prompt would be the same; "
            "add one, e.g. {text}"
        )
    return tuple(dict.fromkeys(fields))


def read_items(
    path: Path, fmt: InputFormat, template: str | None = None
) -> Iterator[Item | Problem]:
    """Every line of the input as an `Item` or a `Problem`, in order; raises `InputError`."""
    fields = template_fields(template) if template else ()
    if fmt is InputFormat.TEXT and fields and set(fields) != {"text"}:
        raise InputError(
            f"--template {template!r}: a text input has one field, {{text}} (the line); "
            "use it instead of " + ", ".join(f"{{{f}}}" for f in fields if f != "text")
        )
    ids = _Ids()
    try:
        handle = path.open("rb", buffering=_READ_BUFFER)
    except OSError as exc:
        raise InputError(_unreadable(path, exc)) from None
    with handle:
        if fmt is InputFormat.CSV:
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
            lines: Iterator[tuple[int, Item | Problem]] = _csv_items(text, path, template)
        else:
            lines = _line_items(handle, path, fmt, template)
        try:
            for line, entry in lines:
                yield ids.check(line, entry)
        except UnicodeDecodeError as exc:
            raise InputError(_undecodable(path, exc, "")) from None


class _Ids:
    """Gives each record a custom_id no other record has; a repeated one is a `Problem`."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._first_line: dict[str, int] = {}

    def check(self, line: int, entry: Item | Problem) -> Item | Problem:
        seen = self._seen
        custom_id = entry.custom_id
        if custom_id in seen:
            first = self._first_line.get(custom_id)
            where = f" (first on line {first})" if first else ""
            entry = Problem(
                line,
                self._unique(f"line-{line}"),
                "duplicate_custom_id",
                f"line {line}: custom_id {custom_id!r} is used again{where}; "
                "give each line its own custom_id",
            )
        elif isinstance(entry, Item) and len(self._first_line) < 10_000:
            self._first_line[custom_id] = line  # only for the message: a bounded hint
        seen.add(entry.custom_id)
        return entry

    def _unique(self, base: str) -> str:
        candidate, number = base, 1
        while candidate in self._seen:
            number += 1
            candidate = f"{base}.{number}"
        return candidate


def _line_items(
    handle: BinaryIO, path: Path, fmt: InputFormat, template: str | None
) -> Iterator[tuple[int, Item | Problem]]:
    for line, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(_undecodable(path, exc, f" line {line}")) from None
        if line == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        if fmt is InputFormat.TEXT:
            yield line, _text_item(line, text.rstrip("\r\n"), template)
        else:
            yield line, _json_item(line, text, template)


def _text_item(line: int, text: str, template: str | None) -> Item | Problem:
    prompt = template.format_map({"text": text}) if template else text
    return Item(line, f"line-{line}", None, {"messages": [{"role": "user", "content": prompt}]})


def _json_item(line: int, text: str, template: str | None) -> Item | Problem:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        message = f"line {line}: not valid JSON ({exc}); fix the line or remove it"
        return Problem(line, f"line-{line}", "invalid_json", message)
    if not isinstance(obj, dict):
        message = f"line {line}: expected a JSON object, got {type(obj).__name__}; fix the line"
        return Problem(line, f"line-{line}", "invalid_line", message)
    custom_id = obj.get("custom_id", f"line-{line}")
    if not isinstance(custom_id, str) or not custom_id:
        message = f"line {line}: custom_id must be a non-empty string, got {custom_id!r}"
        return Problem(line, f"line-{line}", "invalid_line", message)
    model = obj.get("model")
    if any(key in obj for key in _BATCH_KEYS):
        return _batch_item(line, custom_id, obj)
    if model is not None and (not isinstance(model, str) or not model):
        return _bad(line, custom_id, f"model must be a model name, got {model!r}")
    if template is not None:
        return _templated(line, custom_id, model, obj, template)
    return _prompt_item(line, custom_id, model, obj)


def _batch_item(line: int, custom_id: str, obj: dict[str, Any]) -> Item | Problem:
    """A line in the OpenAI Batch input shape: `custom_id`, `method`, `url`, `body`."""
    body = obj.get("body")
    if not isinstance(body, dict):
        got = "no body" if body is None else f"a body that is a {type(body).__name__}"
        message = (
            f"line {line}: an OpenAI Batch line needs a `body` object, got {got}; "
            "add the request body"
        )
        return Problem(line, custom_id, "missing_body", message)
    url = obj.get("url", "/v1/chat/completions")
    if url not in CHAT_URLS:
        message = f"line {line}: url {url!r} is not supported; batches send /v1/chat/completions"
        return Problem(line, custom_id, "unsupported_url", message)
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        return _bad(line, custom_id, f"method {method!r} is not supported; use POST")
    if body.get("stream"):
        return _bad(line, custom_id, "body.stream is true; batch requests are not streamed")
    body = dict(body)
    model = body.pop("model", None)
    if model is not None and (not isinstance(model, str) or not model):
        return _bad(line, custom_id, f"body.model must be a model name, got {model!r}")
    return Item(line, custom_id, model, body)


def _prompt_item(
    line: int, custom_id: str, model: str | None, obj: dict[str, Any]
) -> Item | Problem:
    """A line with `prompt` or `messages`; its other keys are request parameters, as given."""
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if messages is None and prompt is None:
        message = (
            f"line {line}: no body, prompt or messages; add one, or give --template "
            "to build the prompt from the line's fields"
        )
        return Problem(line, custom_id, "missing_body", message)
    if messages is not None and not isinstance(messages, list):
        return _bad(line, custom_id, "messages must be a list of {role, content} objects")
    if prompt is not None and not isinstance(prompt, str):
        return _bad(line, custom_id, "prompt must be a string")
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        return _bad(line, custom_id, "parameters must be an object of request parameters")
    body = {key: value for key, value in obj.items() if key not in _OWN_KEYS}
    body.update(params)
    if body.get("stream"):
        return _bad(line, custom_id, "stream is true; batch requests are not streamed")
    body["messages"] = _messages(obj.get("system"), messages, prompt)
    return Item(line, custom_id, model, body)


def _templated(
    line: int, custom_id: str, model: str | None, obj: Mapping[str, Any], template: str
) -> Item | Problem:
    try:
        prompt = template.format_map(obj)
    except KeyError as exc:
        field = exc.args[0]
        message = (
            f"line {line}: the template needs {{{field}}} and the line has no {field!r}; "
            "add it or change --template"
        )
        return Problem(line, custom_id, "missing_column", message)
    except (ValueError, TypeError) as exc:
        return _bad(line, custom_id, f"the template cannot format this line ({exc})")
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        return _bad(line, custom_id, "parameters must be an object of request parameters")
    body = dict(params)
    body["messages"] = _messages(obj.get("system"), None, prompt)
    return Item(line, custom_id, model, body)


def _csv_items(
    text: io.TextIOWrapper, path: Path, template: str | None
) -> Iterator[tuple[int, Item | Problem]]:
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    columns = [name for name in header if name]
    if template is None:
        if "prompt" not in columns:
            raise InputError(
                f"{path}: a CSV input needs --template naming its columns "
                f"(e.g. --template 'Summarise: {{{(columns or ['text'])[0]}}}') or a prompt "
                f"column; its columns: {', '.join(columns) or 'none'}"
            )
    else:
        missing = [name for name in template_fields(template) if name not in columns]
        if missing:
            raise InputError(
                f"--template uses {', '.join(f'{{{m}}}' for m in missing)}, which {path} "
                f"has no column for (its columns: {', '.join(columns) or 'none'}); "
                "fix the template or the header"
            )
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        yield line, _csv_item(line, row, template)


def _csv_item(line: int, row: dict[str | Any, str | Any], template: str | None) -> Item | Problem:
    custom_id = row.get("custom_id") or f"line-{line}"
    model = row.get("model") or None
    values = {key: value for key, value in row.items() if key is not None and value is not None}
    if template is None:
        if "prompt" not in values:
            message = f"line {line}: the row has no prompt value; complete the row"
            return Problem(line, custom_id, "missing_column", message)
        return _prompt_item(line, custom_id, model, {"prompt": values["prompt"]})
    return _templated(line, custom_id, model, values, template)


def _messages(system: object, messages: list[Any] | None, prompt: str | None) -> list[Any]:
    built: list[Any] = []
    if isinstance(system, str) and system:
        built.append({"role": "system", "content": system})
    if messages is not None:
        built.extend(messages)
    if prompt is not None:
        built.append({"role": "user", "content": prompt})
    return built


def _bad(line: int, custom_id: str, what: str) -> Problem:
    return Problem(line, custom_id, "invalid_line", f"line {line}: {what}; fix the line")


def _unreadable(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{path} does not exist; check the path of the batch input"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory; give the batch input file"
    return f"cannot read {path} ({exc.strerror or exc}); check its permissions"


def _undecodable(path: Path, exc: UnicodeDecodeError, where: str) -> str:
    byte = exc.object[exc.start : exc.start + 1].hex() if exc.object else "?"
    return f"{path}{where} is not UTF-8 text (byte 0x{byte}); save it as UTF-8 and run again"
