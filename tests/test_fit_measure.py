"""Measuring real processes, storing measurements beside estimates, reading llama-server
command lines, and the hardware probes on recorded /proc and cgroup files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from muxtui.engine.config import Config
from muxtui.engine.fit.estimate import FitParams
from muxtui.engine.fit.flags import params_from_argv
from muxtui.engine.fit.hardware import detect_hardware, parse_cpuinfo, read_cgroup_limit
from muxtui.engine.fit.measure import FitRecord, FitStore, Measured, measure_process
from muxtui.engine.fit.report import fit_store
from muxtui.engine.paths import Paths
from tests.fit_shapes import write_shape

MIB = 2**20
# Holds 64 MiB of touched anonymous memory and 32 MiB of a mapped, read file, then waits.
_HOLDER = """
import mmap, sys, time
anon = bytearray(64 * 2**20)
for i in range(0, len(anon), 4096):
    anon[i] = 1
with open(sys.argv[1], "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    total = sum(mapped[i] for i in range(0, len(mapped), 4096))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(32 * MIB))
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the split needs /proc")
def test_measure_splits_anonymous_and_file_pages(holder: subprocess.Popen[str]) -> None:
    measured = measure_process(holder.pid)
    assert measured.pids == (holder.pid,)
    assert measured.anon >= 64 * MIB
    assert measured.file >= 32 * MIB
    assert measured.rss == measured.anon + measured.file
    assert measured.vram == 0
    assert abs(measured.at - time.time()) < 60


def test_measure_covers_the_process_tree(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(b"\0" * MIB)
    shell = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c \'{_HOLDER}\' "{data}"; exit 0'],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert shell.stdout is not None
        assert shell.stdout.readline().strip() == "ready"
        measured = measure_process(shell.pid)
        assert len(measured.pids) == 2 and measured.pids[0] == shell.pid
        assert measured.anon >= 64 * MIB
    finally:
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.kill()
        shell.kill()
        shell.wait(timeout=10)


def test_measure_a_gone_process() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    with pytest.raises(ProcessLookupError):
        measure_process(finished.pid)


def test_store_keeps_records_private_and_newest_first(tmp_path: Path) -> None:
    store = FitStore(tmp_path / "data" / "fit.sqlite3")
    assert store.latest("/m.gguf") is None
    for at, rss in ((1.0, 100 * MIB), (2.0, 110 * MIB)):
        store.add(
            FitRecord(
                "/m.gguf",
                5,
                "first_request",
                FitParams(ctx=2048, parallel=2),
                105 * MIB,
                0,
                Measured(rss, 60 * MIB, rss - 60 * MIB, 0, (), at),
            )
        )
    latest = store.latest("/m.gguf")
    assert latest is not None
    assert latest.measured.rss == 110 * MIB and latest.params == FitParams(ctx=2048, parallel=2)
    assert latest.host_error == pytest.approx(-5 / 110)
    assert [r.measured.at for r in store.history("/m.gguf")] == [2.0, 1.0]
    assert store.history("/other.gguf") == []
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


async def test_engine_records_a_measurement_beside_its_estimate(
    holder: subprocess.Popen[str], paths: Paths, tmp_path: Path
) -> None:
    from muxtui.engine.core import Engine

    model = write_shape("mla", tmp_path / "mla.gguf", scale=4)
    argv = ["llama-server", "-m", str(model), "-c", "2048", "-np", "1", "--cache-ram", "0"]
    async with Engine(Config(), paths, discover=False) as engine:
        record = await engine.record_fit(str(model), holder.pid, argv)
    assert record.params.ctx == 2048 and record.params.cache_ram_mib == 0
    assert record.estimate_host is not None and record.estimate_host > 0
    assert record.measured.rss >= 64 * MIB
    assert record.file_bytes == model.stat().st_size
    stored = fit_store(paths.data_dir).latest(str(model))
    assert stored is not None and stored.estimate_host == record.estimate_host


def test_llama_server_command_lines() -> None:
    bare = params_from_argv(["llama-server", "-m", "x.gguf", "--port", "8080"])
    assert (bare.ctx, bare.parallel, bare.slots, bare.unified) == (0, 0, 4, True)
    assert bare.cache_ram_mib == 8192 and bare.ngl == -1
    full = params_from_argv(
        [
            "llama-server",
            "-m",
            "x",
            "-c",
            "8192",
            "-np",
            "2",
            "-ngl",
            "20",
            "-ctk",
            "q8_0",
            "-ctv",
            "q4_0",
            "--swa-full",
            "--cache-ram=1024",
            "-ub",
            "256",
            "--ctx-checkpoints",
            "4",
            "--no-repack",
            "--no-mmap",
            "-kvu",
        ]
    )
    assert full == FitParams(
        ctx=8192,
        parallel=2,
        kv_unified=True,
        cache_type_k="q8_0",
        cache_type_v="q4_0",
        ngl=20,
        n_ubatch=256,
        swa_full=True,
        repack=False,
        mmap=False,
        cache_ram_mib=1024,
        ctx_checkpoints=4,
    )
    assert params_from_argv(["-ngl", "999"]).ngl == -1
    assert params_from_argv(["-ngl", "all"]).ngl == -1
    assert params_from_argv(["-ctk", "bogus"]).cache_type_k == "f16"


# /proc/cpuinfo lines as three machines print them.
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni \
amx_bf16 amx_tile amx_int8
"""
HASWELL = (
    "model name\t: Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz\nflags\t\t: sse2 avx avx2 fma f16c\n"
)
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp i8mm sve\n"


def test_cpu_features_from_cpuinfo() -> None:
    model, features = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"} <= set(features)
    assert "avx512_vnni" not in parse_cpuinfo(HASWELL)[1]
    assert parse_cpuinfo(HASWELL)[1] == ("avx", "avx2", "f16c", "fma")
    assert {"asimddp", "i8mm", "sve"} <= set(parse_cpuinfo(GRAVITON)[1])
    assert parse_cpuinfo("") == ("", ())


def test_cgroup_limits(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("8589934592\n")
    (v2 / "memory.current").write_text("1073741824\n")
    assert read_cgroup_limit(v2) == (8 * 2**30, 2**30)
    (v2 / "memory.max").write_text("max\n")
    assert read_cgroup_limit(v2) == (None, None)
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert read_cgroup_limit(v1) == (None, None)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("4294967296\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1024\n")
    assert read_cgroup_limit(v1) == (4 * 2**30, 1024)
    assert read_cgroup_limit(tmp_path / "none") == (None, None)


def test_detect_this_machine() -> None:
    profile = detect_hardware()
    assert profile.cpu.logical_cores >= profile.cpu.physical_cores >= 1
    assert profile.memory.total >= profile.memory.available > 0
    assert profile.memory.usable_available <= profile.memory.available
    if not profile.gpus:
        assert profile.gpu_status  # says why there is no GPU
