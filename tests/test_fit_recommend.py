"""Recommendations for a CPU-only machine and for NVIDIA machines built from recorded NVML
values (hardware profiles constructed directly: no GPU is needed to check the arithmetic)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from muxtui.engine.fit.estimate import FitParams, estimate
from muxtui.engine.fit.gguf import TensorInfo
from muxtui.engine.fit.hardware import CpuInfo, GpuInfo, HardwareProfile, MemoryInfo
from muxtui.engine.fit.recommend import (
    GIB,
    fits,
    gpu_needs,
    host_need,
    max_context,
    plan_budget,
    recommend,
)
from muxtui.engine.fit.shape import ModelShape

MIB = 2**20
ZEN4 = CpuInfo("AMD Ryzen 9 7950X 16-Core Processor", 16, 32, "x86_64", ("avx2", "avx512f"))
# nvmlDeviceGetMemoryInfo / nvmlSystemGetDriverVersion as recorded on the machines named.
RTX_3090 = GpuInfo(
    0, "NVIDIA GeForce RTX 3090", "nvidia", 25_769_803_776, 24_894_242_816, "550.54.14"
)
RTX_3060TI = GpuInfo(
    0, "NVIDIA GeForce RTX 3060 Ti", "nvidia", 8_589_934_592, 8_024_883_200, "550.54.14"
)


def _bytes(kind: str, values: int) -> int:
    per_block, size = {"Q4_K": (256, 144), "Q6_K": (256, 210), "F32": (1, 4)}[kind]
    return values // per_block * size


def llama_8b() -> ModelShape:
    """Llama-3.1-8B in Q4_K_M as its GGUF describes it (no file needed)."""
    tensors: list[TensorInfo] = []
    offset = 0

    def add(name: str, kind: str, shape: tuple[int, ...]) -> None:
        nonlocal offset
        values = 1
        for dim in shape:
            values *= dim
        size = _bytes(kind, values)
        tensors.append(TensorInfo(name, kind, shape, size, offset))
        offset += size

    add("token_embd.weight", "Q4_K", (4096, 128256))
    for i in range(32):
        b = f"blk.{i}."
        add(b + "attn_norm.weight", "F32", (4096,))
        add(b + "attn_q.weight", "Q4_K", (4096, 4096))
        add(b + "attn_k.weight", "Q4_K", (4096, 1024))
        add(b + "attn_v.weight", "Q6_K", (4096, 1024))
        add(b + "attn_output.weight", "Q4_K", (4096, 4096))
        add(b + "ffn_norm.weight", "F32", (4096,))
        add(b + "ffn_gate.weight", "Q4_K", (4096, 14336))
        add(b + "ffn_up.weight", "Q4_K", (4096, 14336))
        add(b + "ffn_down.weight", "Q6_K", (14336, 4096))
    add("output_norm.weight", "F32", (4096,))
    add("output.weight", "Q6_K", (4096, 128256))
    return ModelShape(
        path="llama-3.1-8b-q4_k_m.gguf",
        file_bytes=offset + 8 * MIB,
        architecture="llama",
        name="Llama 3.1 8B",
        parameters=sum(t.elements for t in tensors),
        n_layer=32,
        n_embd=4096,
        n_vocab=128256,
        vocab_bytes=900_000,
        n_merges=280_147,
        context_length=131072,
        n_ff=(14336,) * 32,
        n_head=(32,) * 32,
        n_head_kv=(8,) * 32,
        head_dim_k=128,
        head_dim_v=128,
        swa_layers=(False,) * 32,
        recurrent_layers=(False,) * 32,
        tensors=tuple(tensors),
    )


def cpu_box(available_gib: float) -> HardwareProfile:
    memory = MemoryInfo(total=32 * GIB, available=int(available_gib * GIB))
    return HardwareProfile(ZEN4, memory, (), False, "no NVIDIA driver")


def gpu_box(gpu: GpuInfo) -> HardwareProfile:
    return HardwareProfile(ZEN4, MemoryInfo(64 * GIB, 48 * GIB), (gpu,))


@pytest.fixture(scope="module")
def model() -> ModelShape:
    return llama_8b()


def test_the_model_is_the_size_people_know(model: ModelShape) -> None:
    assert 4.5 * GIB < model.tensor_bytes < 4.9 * GIB  # the Q4_K_M file is 4.58 GiB
    assert 7.9e9 < model.parameters < 8.1e9
    kv = estimate(model, FitParams(ctx=8192, parallel=1)).host.kv_cache
    assert kv == 32 * 8192 * 2 * (8 * 128 * 2) == 1 * GIB


def test_cpu_only_profile(model: ModelShape) -> None:
    roomy = recommend(model, cpu_box(24))
    assert roomy.fits
    assert roomy.params.ngl == 0 and roomy.params.cache_type_k == "f16"
    assert roomy.params.ctx == 8192
    assert roomy.params.slots == 4  # 16 physical cores
    assert roomy.batch_concurrency == 4
    assert "--cache-ram" in roomy.flags and "1024" in roomy.flags  # one more full context
    assert [point.ngl for point in roomy.curve] == [0]
    assert roomy.max_ctx == roomy.curve[0].max_ctx
    # the largest context is the largest that fits: 256 more tokens would not
    profile = cpu_box(24)
    assert fits(estimate_at(model, roomy.params, roomy.max_ctx), profile)
    if roomy.max_ctx < model.context_length:
        assert not fits(estimate_at(model, roomy.params, roomy.max_ctx + 256), profile)


def estimate_at(model: ModelShape, params: FitParams, ctx: int) -> object:
    from muxtui.engine.fit.recommend import cache_ram_for

    first = estimate(model, replace(params, ctx=ctx), repacks=True, repacks_q2k=True)
    sized = replace(params, ctx=ctx, cache_ram_mib=cache_ram_for(first))
    return estimate(model, sized, repacks=True, repacks_q2k=True)


def test_cpu_only_short_of_memory_quantizes_the_cache_then_gives_up(model: ModelShape) -> None:
    tight = recommend(model, cpu_box(11), ctx=32768)
    assert tight.fits
    assert tight.params.cache_type_k in ("q8_0", "q4_0")  # f16 would need 4 GiB of cache
    f16 = estimate(model, replace(tight.params, cache_type_k="f16", cache_type_v="f16"))
    assert not fits(f16, cpu_box(11))
    hopeless = recommend(model, cpu_box(3))
    assert not hopeless.fits
    assert hopeless.max_ctx == 0
    assert "does not fit" in hopeless.reason and "GiB" in hopeless.reason


def test_nvidia_24gb_takes_every_layer(model: ModelShape) -> None:
    profile = gpu_box(RTX_3090)
    advice = recommend(model, profile)
    assert advice.fits
    assert advice.params.ngl == -1  # every layer and the output layer
    assert advice.params.slots == 4 and advice.params.unified
    vram = gpu_needs(advice.estimate)["gpu0"]
    assert 5 * GIB < vram < RTX_3090.memory_free - GIB
    # RAM keeps the token embeddings (looked up on the CPU) and the process
    embd = model.tensors[0].nbytes
    assert advice.estimate.host.weights_mapped == embd
    assert host_need(advice.estimate) < 2 * GIB
    # the curve: more layers on the GPU never shrink the context that fits
    contexts = [point.max_ctx for point in advice.curve]
    assert advice.curve[-1].ngl == model.n_layer + 1
    assert contexts[-1] >= 65536


def test_nvidia_8gb_long_context_offloads_part_of_the_model(model: ModelShape) -> None:
    profile = gpu_box(RTX_3060TI)
    full = recommend(model, profile, ctx=8192)
    assert full.fits and full.params.ngl == -1  # 4.6 GiB of weights + 1 GiB of cache
    long = recommend(model, profile, ctx=65536)
    assert long.fits
    params = long.params
    assert params.cache_type_k != "f16" or 0 <= params.ngl < model.n_layer + 1
    assert gpu_needs(long.estimate).get("gpu0", 0) <= RTX_3060TI.memory_free - GIB
    if params.ngl >= 0:  # one more layer on the GPU would not fit
        more = estimate(model, replace(params, ngl=params.ngl + 1), gpus=1)
        assert not fits(more, profile)
    assert max_context(model, replace(params, ngl=0), profile) >= 65536  # all in RAM fits


def test_budget_counts_warm_models_smallest_first(model: ModelShape) -> None:
    profile = cpu_box(20)
    small = recommend(model, profile, ctx=2048)
    large = recommend(model, profile, ctx=32768)
    advice = plan_budget([small, large, small], profile)
    together = 2 * host_need(small.estimate) + host_need(large.estimate)
    room = 20 * GIB - GIB
    assert advice.keep_warm == (3 if together <= room else 2)
    assert advice.memory_budget_gb == 19.0
    assert plan_budget([], profile).keep_warm == 0
