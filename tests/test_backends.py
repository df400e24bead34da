"""The wire protocols on their own: SSE parsing, OpenAI-compatible and Ollama backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from muxtui.engine.backends.base import ChatRequest, Endpoint, LoadedModel, StreamEnd
from muxtui.engine.backends.ollama import OllamaBackend, ollama_root
from muxtui.engine.backends.openai import OpenAIBackend, SSEDecoder
from muxtui.engine.events import ENGINE_BODY_FIELDS, ChatDelta, ChatMessage, ChatParams
from tests.fake_server import Behaviour, FakeOpenAIServer

REQUEST = ChatRequest("fake-model", (ChatMessage("user", "three little words"),))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


async def collect(backend: OpenAIBackend | OllamaBackend, request: ChatRequest) -> list[object]:
    return [item async for item in backend.stream_chat(request)]


# --- SSE -------------------------------------------------------------------------------------


def test_sse_decoder_splits_events_across_chunk_boundaries() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n") == []
    assert decoder.feed(b"\ndata: two\n\ndata: thr") == [b'{"a": 1}', b"two"]
    assert decoder.feed(b"ee\n\n") == [b"three"]


def test_sse_decoder_handles_crlf_cr_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    stream = (
        b": keep-alive\r\n\r\n"
        b"event: message\r\nid: 7\r\ndata: first\r\ndata: second\r\n\r\n"
        b"data:no-space\r\r"
        b"retry: 100\n\n"
    )
    assert decoder.feed(stream) == [b"first\nsecond", b"no-space"]


def test_sse_decoder_handles_a_crlf_split_between_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == [b"x"]
    assert decoder.feed(b"\ndata: y\r\n\r\n") == [b"y"]


def test_sse_decoder_close_returns_an_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [b"[DONE]"]
    assert decoder.close() == []


# --- OpenAI-compatible -----------------------------------------------------------------------


async def test_openai_stream_yields_deltas_then_usage(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OpenAIBackend(client, Endpoint("fake", fake_server.base_url))
    items = await collect(backend, REQUEST)
    assert items[:-1] == [ChatDelta("tok ")] * 5
    assert items[-1] == StreamEnd("stop", prompt_tokens=3, completion_tokens=5)
    sent = fake_server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "three little words"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_sends_params_key_and_openrouter_headers(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    endpoint = Endpoint("openrouter", fake_server.base_url, api_key="k-1", headers={"X-Extra": "1"})
    backend = OpenAIBackend(client, endpoint)
    request = ChatRequest("fake-model", REQUEST.messages, ChatParams(temperature=0.2, max_tokens=2))
    items = await collect(backend, request)
    assert items[-1] == StreamEnd("length", prompt_tokens=3, completion_tokens=2)
    sent = fake_server.requests[-1]
    assert sent.json is not None
    assert sent.json["temperature"] == 0.2 and sent.json["max_tokens"] == 2
    assert sent.headers["authorization"] == "Bearer k-1"
    assert sent.headers["x-title"] == "muxtui"
    assert sent.headers["http-referer"].startswith("https://")
    assert sent.headers["x-extra"] == "1"


async def test_other_providers_get_no_openrouter_headers(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    await collect(OpenAIBackend(client, Endpoint("gpu-box", fake_server.base_url)), REQUEST)
    headers = fake_server.requests[-1].headers
    assert "x-title" not in headers and "authorization" not in headers


async def test_llama_server_timings_give_the_token_rate(client: httpx.AsyncClient) -> None:
    with FakeOpenAIServer(behaviour=Behaviour(include_timings=True)) as server:
        backend = OpenAIBackend(client, Endpoint("llama", server.base_url))
        end = (await collect(backend, REQUEST))[-1]
    assert isinstance(end, StreamEnd)
    assert end.tokens_per_s is not None and end.tokens_per_s > 0


async def test_openai_complete_and_list_models(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OpenAIBackend(client, Endpoint("fake", fake_server.base_url))
    completion = await backend.complete(REQUEST)
    assert completion.text == "tok " * 5
    assert completion.end == StreamEnd("stop", prompt_tokens=3, completion_tokens=5)
    assert fake_server.requests[-1].json["stream"] is False  # type: ignore[index]
    assert await backend.list_models() == ["fake-model"]
    assert OpenAIBackend.lists_loaded_models is False
    assert await backend.loaded_models() == []


# --- Ollama ----------------------------------------------------------------------------------


async def test_ollama_stream_yields_deltas_then_stats(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OllamaBackend(client, Endpoint("ollama", fake_server.root_url))
    request = ChatRequest("fake-model", REQUEST.messages, ChatParams(temperature=0, max_tokens=3))
    items = await collect(backend, request)
    assert items[:-1] == [ChatDelta("tok ")] * 3
    end = items[-1]
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.prompt_tokens, end.completion_tokens) == ("length", 3, 3)
    assert end.tokens_per_s is not None and end.tokens_per_s > 0
    sent = fake_server.requests[-1]
    assert sent.path == "/api/chat"
    assert sent.json is not None
    assert sent.json["stream"] is True
    assert sent.json["options"] == {"temperature": 0, "num_predict": 3}


async def test_ollama_complete_tags_and_loaded_models_with_expiry(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OllamaBackend(client, Endpoint("ollama", fake_server.root_url + "/api"))
    completion = await backend.complete(REQUEST)
    assert completion.text == "tok " * 5
    assert completion.end.completion_tokens == 5
    assert await backend.list_models() == ["fake-model"]
    loaded = await backend.loaded_models()
    assert loaded == [LoadedModel("fake-model", 123_456_789, 123_456_789, "2026-11-23T12:00:00Z")]
    assert OllamaBackend.lists_loaded_models is True


def test_ollama_root_drops_api_suffixes() -> None:
    assert ollama_root("http://h:11434/") == "http://h:11434"
    assert ollama_root("http://h:11434/api") == "http://h:11434"
    assert ollama_root("http://h:11434/v1") == "http://h:11434"


async def test_a_gzip_encoded_event_stream_is_decoded() -> None:
    import gzip

    events = b'data: {"choices": [{"delta": {"content": "zipped"}}]}\n\ndata: [DONE]\n\n'

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
        return httpx.Response(200, headers=headers, content=gzip.compress(events))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mock_client:
        backend = OpenAIBackend(mock_client, Endpoint("zip", "http://zip.invalid/v1"))
        items = await collect(backend, REQUEST)
    assert items == [ChatDelta("zipped"), StreamEnd()]


# --- every request parameter on the wire -----------------------------------------------------

TOOL = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
FULL = ChatParams(
    temperature=0.3,
    max_tokens=4,
    top_p=0.9,
    stop=("END", "\n\n"),
    seed=42,
    presence_penalty=0.5,
    frequency_penalty=-0.25,
    response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
    tools=(TOOL,),
    tool_choice="auto",
    extra={"logprobs": True, "user": "u-1", "provider": {"order": ["x"]}},
)


async def test_openai_puts_every_param_on_the_wire_exactly(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OpenAIBackend(client, Endpoint("fake", fake_server.base_url))
    await collect(backend, ChatRequest("fake-model", REQUEST.messages, FULL))
    assert fake_server.requests[-1].json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "three little words"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "max_tokens": 4,
        "top_p": 0.9,
        "stop": ["END", "\n\n"],
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "response_format": FULL.response_format,
        "tools": [TOOL],
        "tool_choice": "auto",
        "logprobs": True,
        "user": "u-1",
        "provider": {"order": ["x"]},
    }


async def test_ollama_maps_every_param_to_its_own_fields(
    fake_server: FakeOpenAIServer, client: httpx.AsyncClient
) -> None:
    backend = OllamaBackend(client, Endpoint("ollama", fake_server.root_url))
    params = ChatParams(
        temperature=FULL.temperature,
        max_tokens=FULL.max_tokens,
        top_p=FULL.top_p,
        stop="END",
        seed=FULL.seed,
        presence_penalty=FULL.presence_penalty,
        frequency_penalty=FULL.frequency_penalty,
        response_format=FULL.response_format,
        tools=FULL.tools,
        extra={"keep_alive": "5m", "options": {"num_ctx": 2048}},
    )
    await collect(backend, ChatRequest("fake-model", REQUEST.messages, params))
    sent = fake_server.requests[-1].json
    assert sent is not None
    assert sent["options"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "num_predict": 4,
        "stop": ["END"],
        "num_ctx": 2048,
    }
    assert (sent["format"], sent["tools"], sent["keep_alive"]) == (SCHEMA, [TOOL], "5m")
    json_mode = ChatParams(response_format={"type": "json_object"})
    await collect(backend, ChatRequest("fake-model", REQUEST.messages, json_mode))
    assert fake_server.requests[-1].json["format"] == "json"  # type: ignore[index]


def test_a_request_body_survives_params_from_body_and_back() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": False},
        **FULL.body_fields(),
        "n": 2,
        "max_completion_tokens": 9,
    }
    params = ChatParams.from_body(body)
    assert params.stream is True
    assert params.stop == ("END", "\n\n") and params.tools == (TOOL,)
    expected = {k: v for k, v in body.items() if k not in ENGINE_BODY_FIELDS}
    assert params.body_fields() == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"temperature": "hot"}, "temperature must be a number, not 'hot'"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer, not 2.5"),
        ({"seed": True}, "seed must be an integer, not True"),
        ({"stop": ["a", 1]}, "stop must be a string or a list of strings, not ['a', 1]"),
        ({"stream": "yes"}, "stream must be true or false, not 'yes'"),
    ],
)
def test_a_mistyped_body_field_is_named(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        ChatParams.from_body(body)
    assert str(caught.value) == message


def test_extra_may_not_shadow_a_named_or_engine_field() -> None:
    with pytest.raises(ValueError, match="may not carry messages, temperature"):
        ChatParams(extra={"temperature": 1, "messages": []})
