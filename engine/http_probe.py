"""A minimal HTTP/1.1 GET for loopback probes (health checks, /v1/models, Ollama's /api/ps).

Readiness polling runs many times a second while a server starts; a bare asyncio connection
costs a fraction of a millisecond and pulls in no HTTP client (no TLS context, no pool).
"""

from __future__ import annotations

import asyncio
import contextlib


async def http_get(
    host: str, port: int, path: str, *, timeout: float, read_body: bool = True
) -> tuple[int, bytes]:
    """GET `path` over plain HTTP; (status, body). Raises OSError or TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Accept: application/json\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("latin-1"))
            await writer.drain()
            if not read_body:
                return _parse_status(await reader.readline()), b""
            raw = await reader.read()
            head, _, body = raw.partition(b"\r\n\r\n")
            status = _parse_status(head.split(b"\r\n", 1)[0])
            if b"transfer-encoding: chunked" in head.lower():
                body = _dechunk(body)
            return status, body
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _parse_status(line: bytes) -> int:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {line[:60]!r}")
    return int(parts[1])


def _dechunk(data: bytes) -> bytes:
    """Decode a chunked body that was read to the end."""
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
