"""A real, stdlib-only OpenAI- and Ollama-compatible HTTP/1.1 server for tests and benchmarks.

It runs on its own event loop in a daemon thread, so sync tests, async tests, subprocess tests
and benchmarks can all talk to it over real sockets. Run as a script it stands in for a local
model server process (``python tests/fake_server.py --port 8080 --startup-delay 1 -m x.gguf``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

try:
    from tests import fake_context
except ImportError:  # run as a script (even through runpy): the helper lies beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fake_context  # type: ignore[no-redef]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@dataclass
class Behaviour:
    """How the server answers; mutable, read at the start of each request."""

    first_byte_delay: float = 0.0  # seconds before a chat response's headers are sent
    tokens: int = 5  # completion tokens per reply
    token_gap: float = 0.0  # seconds between streamed tokens
    token_text: str = "tok "  # each token's text; reply text = token_text * tokens
    include_timings: bool = False  # add a llama-server style "timings" object
    startup_delay: float = 0.0  # /health answers 503 {"status":"loading"} until then
    # Context-window mode (tests/fake_context.py): a prompt of this many tokens or more gets
    # llama-server's 400, replies stop where the context ends, usage counts the templated
    # prompt, and /props, /tokenize and /apply-template answer as llama-server's do.
    context_limit: int | None = None
    tokenize: bool = True  # with a context limit: whether /tokenize and /apply-template exist
    props: bool = True  # with a context limit: whether /props reports it (OpenAI's never does)
    fail_rate: float = 0.0  # chance that a chat request fails with one of fail_statuses
    fail_statuses: tuple[int, ...] = (429, 503)
    total_slots: int | None = None  # GET /props reports it, as llama-server does


@dataclass
class Failure:
    """One injected failure for the next chat request (either protocol)."""

    status: int | None = None  # this HTTP status + JSON error body (429 if only retry_after)
    retry_after: float | None = None  # adds a Retry-After header
    drop_after_tokens: int | None = None  # stream this many tokens, then abort the socket
    body: bytes | None = None  # raw body override (status 200 unless status is set)
    content_type: str = "application/json"
    end_after_tokens: int | None = None  # stream this many tokens, then end cleanly: no finish
    echo_header: str | None = None  # the error body quotes this request header's value


@dataclass
class RecordedRequest:
    method: str
    path: str  # request target as sent, query string included
    headers: dict[str, str]  # lowercased keys
    json: Any | None
    body: bytes = b""


class _Disconnected(Exception):
    """The client went away while we were answering."""


_DETAILS = {"format": "gguf", "family": "llama", "parameter_size": "7B"}
_SIZE = 123_456_789
_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions", "/api/chat")


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"


def _error_body(status: int, message: str | None = None) -> bytes:
    kind = {429: "rate_limit_error"}.get(status, "invalid_request_error")
    kind = "server_error" if status >= 500 else kind
    err = {"message": message or _phrase(status), "type": kind, "code": status}
    return json.dumps({"error": err}).encode()


def _frame(data: bytes) -> bytes:
    """One chunk of a chunked transfer-encoded body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _prompt_tokens(messages: Any) -> int:
    listed = messages if isinstance(messages, list) else []
    return max(1, sum(len(fake_context.words(fake_context.message_text(m))) for m in listed))


class FakeOpenAIServer:
    def __init__(
        self,
        models: Sequence[str] = ("fake-model",),
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        api_key: str | None = None,
    ) -> None:
        self.models = list(models)
        self.host, self.port = host, port
        self.behaviour = behaviour or Behaviour()
        self.api_key = api_key
        self.context_lengths: dict[str, int] = {}  # per model: `context_length` in /v1/models
        self.ollama_num_ctx: int | None = None  # a `num_ctx` parameter in /api/show
        self.crash_after_chats: int | None = None  # script mode: os._exit(1) after N chats
        self.requests: list[RecordedRequest] = []
        self.connections_open = self.in_flight = 0
        self.reset_counters()
        self._failures: collections.deque[Failure] = collections.deque()
        self._random = random.Random(0)  # injected failures repeat run to run
        self._chats_done = 0
        self._started_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[Writer] = set()

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeOpenAIServer:
        sock = socket.create_server((self.host, self.port), backlog=1024)
        self.port = sock.getsockname()[1]
        self._started_at = time.monotonic()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name=f"fake-server-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        return self

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = asyncio.start_server(self._handle, sock=sock, limit=1 << 20)
            self._server = loop.run_until_complete(server)
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def stop(self) -> None:
        loop, thread, self._thread = self._loop, self._thread, None
        if loop is None or thread is None:
            return
        if self._server is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- test helpers ----------------------------------------------------------------------
    def fail_next(self, *failures: Failure) -> None:
        self._failures.extend(failures)

    def reset_counters(self) -> None:
        """Zeroes the cumulative counters (the gauges connections_open and in_flight stay)."""
        self.connections_accepted = self.requests_served = self.chat_requests = 0
        self.disconnects_mid_stream = self.injected_failures = 0
        self.tokenize_requests = self.context_rejections = 0
        self.max_in_flight = self.in_flight
        self.requests.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.01)

    def wait_for_sync(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.01)

    # ----- HTTP plumbing ---------------------------------------------------------------------
    async def _handle(self, r: Reader, w: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(w)
        self.connections_accepted += 1
        self.connections_open += 1
        if (sock := w.get_extra_info("socket")) is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one_request(r, w):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # stop(): end quietly (3.11 logs cancelled handlers)
            pass
        except ValueError:  # unparsable request line or framing
            w.write(self._head(400, "application/json", {}, True, 0))
        finally:
            self.connections_open -= 1
            self._writers.discard(w)
            self._tasks.discard(task)
            w.close()

    async def _one_request(self, r: Reader, w: Writer) -> bool:
        """Reads and answers one request; returns whether to keep the connection open."""
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("expect", "").lower() == "100-continue":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while size := int((await r.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await r.readexactly(size + 2))[:-2]
            while await r.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
        else:
            body = await r.readexactly(int(headers.get("content-length", 0)))
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        self.requests.append(req := RecordedRequest(method, target, headers, data, body))
        conn = headers.get("connection", "").lower()
        keep = conn != "close" and (version != "HTTP/1.0" or conn == "keep-alive")
        return await self._route(req, r, w, keep)

    @staticmethod
    def _head(status: int, ctype: str, extra: dict[str, str], close: bool, length: int) -> bytes:
        """Response head; length < 0 means chunked transfer encoding."""
        size = f"Content-Length: {length}" if length >= 0 else "Transfer-Encoding: chunked"
        lines = [f"HTTP/1.1 {status} {_phrase(status)}", f"Content-Type: {ctype}", size]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        lines += ["Connection: close"] if close else []
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self,
        w: Writer,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        w.write(self._head(status, ctype, extra or {}, close, len(body)) + body)
        await w.drain()
        self.requests_served += 1

    def _get(self, path: str) -> Any | None:
        """JSON for the GET endpoints other than /health; None if there is no such route."""
        if path in ("/v1/models", "/models"):
            listed = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.models]
            for item in listed:
                if item["id"] in self.context_lengths:
                    item["context_length"] = self.context_lengths[item["id"]]
            return {"object": "list", "data": listed}
        if path == "/api/tags":
            tags = [{"name": m, "model": m, "size": _SIZE} for m in self.models]
            return {"models": [t | {"details": _DETAILS} for t in tags]}
        if path == "/api/ps":
            m, expires = self.models[0], "2026-11-23T12:00:00Z"
            ps = {"name": m, "model": m, "size": _SIZE, "size_vram": _SIZE, "expires_at": expires}
            if self.behaviour.context_limit is not None:
                ps["context_length"] = self.behaviour.context_limit
            return {"models": [ps | {"details": _DETAILS}]}
        if path == "/props" and self.behaviour.context_limit is not None and self.behaviour.props:
            return fake_context.props(self.behaviour.context_limit, self.behaviour.total_slots)
        if path == "/props" and self.behaviour.total_slots:
            return {"total_slots": self.behaviour.total_slots}
        return {"version": "0.0.0-fake"} if path == "/api/version" else None

    def _answer(self, method: str, path: str, body: Any) -> Any | None:
        """JSON for the plain GET and POST routes; None if there is no such route."""
        if method == "GET":
            return self._get(path)
        return self._post(path, body) if method == "POST" else None

    def _post(self, path: str, body: Any) -> Any | None:
        """JSON for the context-mode POST endpoints; None if there is no such route."""
        body = body if isinstance(body, dict) else {}
        if path == "/api/show":
            model = str(body.get("model") or body.get("name") or "")
            length = self.context_lengths.get(model)
            return fake_context.ollama_show(length, self.ollama_num_ctx)
        if self.behaviour.context_limit is None or not self.behaviour.tokenize:
            return None
        if path == "/tokenize":
            self.tokenize_requests += 1
            content = str(body.get("content", ""))
            return {"tokens": fake_context.token_ids(content, bool(body.get("add_special")))}
        if path == "/apply-template":
            return {"prompt": fake_context.render(body.get("messages"))}
        return None

    async def _route(self, req: RecordedRequest, r: Reader, w: Writer, keep: bool) -> bool:
        method, path = req.method, req.path.split("?", 1)[0]
        if method == "GET" and path in ("/health", "/v1/health"):
            loading = time.monotonic() - self._started_at < self.behaviour.startup_delay
            body = b'{"status":"loading"}' if loading else b'{"status":"ok"}'
            await self._send(w, 503 if loading else 200, body, close=not keep)
        elif self.api_key and req.headers.get("authorization") != f"Bearer {self.api_key}":
            await self._send(w, 401, _error_body(401, "Invalid API key"), close=not keep)
        elif (obj := self._answer(method, path, req.json)) is not None:
            await self._send(w, 200, json.dumps(obj).encode(), close=not keep)
        elif method == "POST" and path in _CHAT_PATHS:
            keep = await self._chat(req, r, w, keep, ollama=path == "/api/chat")
            self._chats_done += 1
            if self.crash_after_chats is not None and self._chats_done >= self.crash_after_chats:
                print(f"fake server: crashing after {self._chats_done} chats", file=sys.stderr)
                sys.stderr.flush()
                os._exit(1)
        else:
            await self._send(w, 404, _error_body(404, f"no route {method} {path}"), close=not keep)
        return keep

    # ----- chat ------------------------------------------------------------------------------
    async def _chat(
        self, recorded: RecordedRequest, r: Reader, w: Writer, keep: bool, ollama: bool
    ) -> bool:
        req = recorded.json
        self.chat_requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        b = copy.copy(self.behaviour)
        fail = self._failures.popleft() if self._failures else Failure()
        if b.fail_rate and not self._failures and self._random.random() < b.fail_rate:
            fail = Failure(status=self._random.choice(b.fail_statuses))
            self.injected_failures += 1
        try:
            if b.first_byte_delay > 0:
                await asyncio.sleep(b.first_byte_delay)
            if r.at_eof() or w.is_closing():
                raise _Disconnected
            status = fail.status or (429 if fail.retry_after is not None else None)
            if status is not None or fail.body is not None:
                extra, ra = {}, fail.retry_after
                if ra is not None:
                    extra["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
                echoed = None
                if fail.echo_header is not None:
                    value = recorded.headers.get(fail.echo_header.lower(), "")
                    echoed = f"header {fail.echo_header}: {value} is not accepted here"
                body = fail.body if fail.body is not None else _error_body(status or 500, echoed)
                await self._send(w, status or 200, body, fail.content_type, extra, not keep)
                return keep
            if not isinstance(req, dict) or not isinstance(req.get("messages", []), list):
                await self._send(w, 400, _error_body(400, "invalid JSON body"), close=not keep)
                return keep
            if (model := req.get("model")) not in self.models:
                msg = f"model '{model}' not found"
                await self._send(w, 404, _error_body(404, msg), close=not keep)
                return keep
            limit = (req.get("options") or {}).get("num_predict") if ollama else None
            limit = req.get("max_tokens", req.get("max_completion_tokens", limit))
            n = min(b.tokens, limit) if isinstance(limit, int) and limit >= 0 else b.tokens
            prompt = _prompt_tokens(req.get("messages"))
            if (n_ctx := b.context_limit) is not None:
                prompt = fake_context.templated_tokens(req.get("messages"))
                if prompt >= n_ctx:  # llama-server's own test: no room left to decode
                    self.context_rejections += 1
                    body = fake_context.context_exceeded(prompt, n_ctx)
                    await self._send(w, 400, body, close=not keep)
                    return keep
                n = min(n, n_ctx - prompt)  # generation stops where the context ends
            reply = _Reply(model, n, n < b.tokens, prompt, b, ollama)
            drop = fail.drop_after_tokens
            if req.get("stream", ollama):
                await self._stream(reply, drop, fail.end_after_tokens, r, w, keep)
            elif drop is None:
                await self._send(w, 200, reply.whole(), close=not keep)
            else:  # the head promises the whole body; send half of it and abort
                body = reply.whole()
                w.write(self._head(200, "application/json", {}, False, len(body)))
                w.write(body[: len(body) // 2])
                await self._abort(w)
            return keep and drop is None
        except (_Disconnected, ConnectionError):
            self.disconnects_mid_stream += 1
            return False
        finally:
            self.in_flight -= 1

    async def _stream(
        self, rep: _Reply, drop: int | None, end: int | None, r: Reader, w: Writer, keep: bool
    ) -> None:
        ctype = "application/x-ndjson" if rep.ollama else "text/event-stream"
        w.write(self._head(200, ctype, {"Cache-Control": "no-cache"}, not keep, -1))
        if not rep.ollama:
            await self._emit(r, w, _frame(rep.sse({"role": "assistant", "content": ""})))
        token = _frame(rep.token())
        rep.first_token_at = time.monotonic()
        cut = drop if drop is not None else end
        for i in range(rep.n if cut is None else min(cut, rep.n)):
            if i and rep.b.token_gap > 0:
                await asyncio.sleep(rep.b.token_gap)
            await self._emit(r, w, token)
        if drop is not None:
            await self._abort(w)
            return
        if end is not None:  # a well-formed body that just stops: no finish, no [DONE]
            await self._emit(r, w, b"0\r\n\r\n")
            self.requests_served += 1
            return
        await self._emit(r, w, _frame(rep.final()))
        await self._emit(r, w, (b"" if rep.ollama else _frame(b"data: [DONE]\n\n")) + b"0\r\n\r\n")
        self.requests_served += 1

    @staticmethod
    async def _abort(w: Writer) -> None:
        """Flushes what was written (so the client sees all of it), then closes abruptly."""
        w.transport.set_write_buffer_limits(high=0)
        await w.drain()
        w.transport.abort()

    @staticmethod
    async def _emit(r: Reader, w: Writer, data: bytes) -> None:
        if r.at_eof() or w.is_closing():
            raise _Disconnected
        w.write(data)
        await w.drain()


class _Reply:
    """Builds the JSON pieces of one chat reply, OpenAI or Ollama flavoured."""

    def __init__(
        self, model: str, n: int, capped: bool, prompt: int, b: Behaviour, ollama: bool
    ) -> None:
        self.model, self.n, self.prompt, self.b, self.ollama = model, n, prompt, b, ollama
        self.reason = "length" if capped else "stop"
        self.started_at = self.first_token_at = time.monotonic()
        self.created = int(time.time())
        self.id = f"chatcmpl-fake-{time.monotonic_ns()}"

    def _base(self) -> dict[str, Any]:
        if self.ollama:
            iso = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(self.created))
            return {"model": self.model, "created_at": iso}
        return {"id": self.id, "created": self.created, "model": self.model}

    def sse(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        obj = self._base() | {"object": "chat.completion.chunk"}
        obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + json.dumps(obj | extra).encode() + b"\n\n"

    def _ndjson(self, content: str, **extra: Any) -> bytes:
        msg = {"role": "assistant", "content": content}
        return json.dumps(self._base() | {"message": msg} | extra).encode() + b"\n"

    def token(self) -> bytes:
        if self.ollama:
            return self._ndjson(self.b.token_text, done=False)
        return self.sse({"content": self.b.token_text})

    def _stats(self) -> dict[str, Any]:
        now, t1 = time.monotonic(), self.first_token_at
        gen, pre = max(now - t1, 1e-6), max(t1 - self.started_at, 1e-6)
        if self.ollama:
            return {
                "done": True,
                "done_reason": self.reason,
                "prompt_eval_count": self.prompt,
                "eval_count": self.n,
                "eval_duration": int(gen * 1e9),
                "prompt_eval_duration": int(pre * 1e9),
                "total_duration": int((now - self.started_at) * 1e9),
                "load_duration": 0,
            }
        total = self.prompt + self.n
        usage = {"prompt_tokens": self.prompt, "completion_tokens": self.n, "total_tokens": total}
        if not self.b.include_timings:
            return {"usage": usage}
        timings = {
            "prompt_n": self.prompt,
            "prompt_ms": pre * 1e3,
            "prompt_per_token_ms": pre * 1e3 / self.prompt,
            "prompt_per_second": self.prompt / pre,
            "predicted_n": self.n,
            "predicted_ms": gen * 1e3,
            "predicted_per_token_ms": gen * 1e3 / max(self.n, 1),
            "predicted_per_second": self.n / gen,
        }
        return {"usage": usage, "timings": timings}

    def final(self) -> bytes:
        if self.ollama:
            return self._ndjson("", **self._stats())
        return self.sse({}, self.reason, **self._stats())

    def whole(self) -> bytes:
        self.first_token_at = time.monotonic()
        text = self.b.token_text * self.n
        if self.ollama:
            return self._ndjson(text, **self._stats())[:-1]
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        obj = self._base() | {"object": "chat.completion"}
        obj["choices"] = [choice | {"finish_reason": self.reason}]
        return json.dumps(obj | self._stats()).encode()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fake OpenAI/Ollama model server", allow_abbrev=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--models", default="fake-model")
    p.add_argument("--tokens", type=int, default=5)
    p.add_argument("--token-gap", type=float, default=0.0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each chat reply")
    p.add_argument("--total-slots", type=int, default=None, help="reported at GET /props")
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--context-limit", type=int, default=None, help="n_ctx, as llama-server's -c")
    p.add_argument("--crash-after-requests", type=int, default=None)
    p.add_argument("--exit-after", type=float, default=None)
    args, _unknown = p.parse_known_args(argv)  # ignores e.g. llama-server's `-m PATH -ngl 99`
    log = sys.stderr
    behaviour = Behaviour(
        tokens=args.tokens,
        token_gap=args.token_gap,
        startup_delay=args.startup_delay,
        first_byte_delay=args.latency,
        total_slots=args.total_slots,
        context_limit=args.context_limit,
    )
    models = [m for m in args.models.split(",") if m] or ["fake-model"]
    server = FakeOpenAIServer(models, args.host, args.port, behaviour)
    server.crash_after_chats = args.crash_after_requests
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"fake server: binding {args.host}:{args.port}", file=log, flush=True)
    server.start()
    deadline = time.monotonic() + (args.exit_after if args.exit_after is not None else 1e12)
    loaded_at = time.monotonic() + args.startup_delay
    while (left := loaded_at - time.monotonic()) > 0 and not done.is_set():
        pct = int(100 * (1 - left / args.startup_delay))
        print(f"loading model '{models[0]}'... {pct}%", file=log, flush=True)
        done.wait(min(0.2, left))
    if not done.is_set():
        print(f"server listening on {server.root_url}", file=log, flush=True)
    while not done.is_set() and (left := deadline - time.monotonic()) > 0:
        done.wait(min(1.0, left))
    print("fake server: shutting down", file=log, flush=True)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
