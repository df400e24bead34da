"""serve in front of a local server muxtui starts (tests/fake_server.py as its command): the
lease is held for a whole stream, `/running` and the muxtui routes load, pin and unload it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import httpx

from muxtui.engine.config import CacheConfig, Config, LocalModelConfig, NetworkConfig
from muxtui.engine.paths import Paths
from tests.conftest import REPO_ROOT
from tests.serve_support import running_serve

FAKE = shlex.quote(str(REPO_ROOT / "tests" / "fake_server.py"))
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def local_config(tmp_path: Path, *extra: str) -> Config:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(4092))
    cmd = " ".join([shlex.quote(sys.executable), FAKE, "--port {port}", "-m {path}", *extra])
    return Config(
        local={"loc": LocalModelConfig(cmd=cmd, path=str(model))},
        cache=CacheConfig(stall_timeout=10.0, stop_grace=2.0, ttl=0),
        network=NetworkConfig(discovery=False),
    )


async def test_a_local_model_streams_with_its_lease_held(tmp_path: Path, paths: Paths) -> None:
    config = local_config(tmp_path, "--tokens 20", "--token-gap 0.05")
    async with (
        running_serve(config, paths) as serve,
        httpx.AsyncClient(base_url=serve.url, timeout=30) as client,
    ):
        body = {"model": "loc", **HELLO, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            chunks = response.aiter_bytes()
            first = await anext(chunks)
            assert first.startswith(b"data: ")
            running = (await client.get("/running")).json()["running"]
            assert running == [{"model": "loc", "state": "ready"}]
            models = (await client.get("/muxtui/v1/models")).json()["models"]
            (row,) = [m for m in models if m["name"] == "loc"]
            assert row["state"] == "busy" and row["in_flight"] == 1
            rest = b"".join([chunk async for chunk in chunks])
        assert rest.endswith(b"data: [DONE]\n\n")
        assert (first + rest).count(b'"content"') >= 20
        row = next(m for m in serve.engine.list_models() if m.name == "loc")
        assert row.in_flight == 0
        whole = await client.post("/v1/chat/completions", json={"model": "loc", **HELLO})
        assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"]


async def test_load_pin_and_unload_through_serve(tmp_path: Path, paths: Paths) -> None:
    async with (
        running_serve(local_config(tmp_path), paths) as serve,
        httpx.AsyncClient(base_url=serve.url, timeout=30) as client,
    ):
        assert (await client.get("/running")).json() == {"running": []}
        assert (await client.post("/muxtui/v1/models/loc/load")).status_code == 200
        assert (await client.get("/running")).json()["running"][0]["state"] == "ready"
        pinned = await client.post("/muxtui/v1/models/loc/pin", json={"pinned": True})
        assert pinned.json() == {"status": "ok", "pinned": True}
        assert next(m for m in serve.engine.list_models() if m.name == "loc").pinned
        bad = await client.post("/muxtui/v1/models/loc/pin", json={"pinned": "yes"})
        assert bad.status_code == 400
        assert (await client.post("/api/models/unload/loc")).status_code == 200
        assert (await client.get("/running")).json() == {"running": []}
        assert (await client.post("/muxtui/v1/models/loc/load")).status_code == 200
        assert (await client.post("/api/models/unload")).status_code == 200
        assert (await client.get("/running")).json() == {"running": []}
        missing = await client.post("/muxtui/v1/models/nope/load")
        assert missing.status_code == 404


async def test_a_local_server_that_cannot_start_is_503(tmp_path: Path, paths: Paths) -> None:
    config = local_config(tmp_path)
    config.local["loc"].cmd = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'"
    async with running_serve(config, paths) as serve:
        for stream in (False, True):
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(
                    f"{serve.url}/v1/chat/completions",
                    json={"model": "loc", **HELLO, "stream": stream},
                )
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "local_server_failed"
