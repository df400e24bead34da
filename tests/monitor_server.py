"""A stand-in model server for the Monitor's tests: it answers like llama-server and uses memory
on demand. Run by the server manager as a `[local]` command:

    python tests/monitor_server.py --port PORT [--grow-when FILE --grow-mb N]
        [--leak-mb-per-s R] [--metrics --tokens-per-s T]

`--grow-when`: once FILE exists, allocate (and touch) N MB, once. `--leak-mb-per-s`: allocate
R MB a second, steadily, from the start (at most
`--leak-cap-mb`). `--metrics`: answer `/metrics` (llama-server's names,
with an old build's `kv_cache_usage_ratio` of 0.25) and `/slots`, counting T tokens a second.
`--loading-s`: answer 503 to everything for the first S seconds, as llama-server does while
it loads the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MB = 10**6
_held: list[bytearray] = []


def allocate(megabytes: float) -> None:
    """Allocate and touch `megabytes` MB so they count as resident (anonymous) memory."""
    _held.append(bytearray(b"\x01") * int(megabytes * MB))


def grow_when(path: str, megabytes: float) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)
    allocate(megabytes)
    print(f"monitor server: allocated {megabytes:g} MB", file=sys.stderr, flush=True)


def leak(megabytes_per_s: float, cap_mb: float) -> None:
    leaked = 0.0
    while leaked < cap_mb:
        allocate(megabytes_per_s / 10)
        leaked += megabytes_per_s / 10
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grow-when", default="")
    parser.add_argument("--grow-mb", type=float, default=200.0)
    parser.add_argument("--leak-mb-per-s", type=float, default=0.0)
    parser.add_argument("--leak-cap-mb", type=float, default=500.0)
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    parser.add_argument("--loading-s", type=float, default=0.0)
    args, _unknown = parser.parse_known_args()
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if time.monotonic() - started < args.loading_s:  # llama-server while loading
                self._send(503, b'{"error":"Loading model"}', "application/json")
            elif self.path == "/health":
                self._send(200, b'{"status":"ok"}', "application/json")
            elif self.path == "/v1/models":
                self._send(200, b'{"data":[{"id":"monitor-model"}]}', "application/json")
            elif self.path == "/metrics" and args.metrics:
                tokens = int(args.tokens_per_s * (time.monotonic() - started))
                text = (
                    "# TYPE llamacpp:tokens_predicted_total counter\n"
                    f"llamacpp:tokens_predicted_total {tokens}\n"
                    "llamacpp:kv_cache_usage_ratio 0.25\n"
                    "llamacpp:requests_processing 0\n"
                )
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            elif self.path == "/slots" and args.metrics:
                slots = [{"id": 0, "n_ctx": 1000, "is_processing": False}]
                self._send(200, json.dumps(slots).encode(), "application/json")
            else:
                self._send(404, b'{"error":"not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:
            pass

    if args.grow_when:
        threading.Thread(target=grow_when, args=(args.grow_when, args.grow_mb), daemon=True).start()
    if args.leak_mb_per_s > 0:
        threading.Thread(
            target=leak, args=(args.leak_mb_per_s, args.leak_cap_mb), daemon=True
        ).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"monitor server: listening on {args.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
