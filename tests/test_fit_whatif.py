"""The Hardware pane's what-if: the estimate for a chosen context, slots and KV cache type,
with the -ngl that fits them and the largest context per -ngl (profiles built directly)."""

from __future__ import annotations

from dataclasses import replace

from muxtui.engine.fit.estimate import estimate
from muxtui.engine.fit.hardware import HardwareProfile, MemoryInfo
from muxtui.engine.fit.recommend import (
    GIB,
    fits,
    gpu_needs,
    max_context,
    recommend,
    what_if,
)
from tests.test_fit_recommend import RTX_3060TI, ZEN4, cpu_box, gpu_box, llama_8b


def test_what_if_on_the_cpu_follows_the_settings() -> None:
    model = llama_8b()
    profile = cpu_box(24)
    small = what_if(model, profile, ctx=4096, parallel=1, kv_type="f16")
    large = what_if(model, profile, ctx=32768, parallel=1, kv_type="f16")
    quantized = what_if(model, profile, ctx=32768, parallel=1, kv_type="q8_0")
    assert small.params.ngl == 0 and small.fits
    assert large.estimate.host.kv_cache == 8 * small.estimate.host.kv_cache == 4 * GIB
    assert quantized.estimate.host.kv_cache == large.estimate.host.kv_cache * 34 // 64
    assert large.flags[:4] == ("-c", "32768", "-np", "1")
    kv_flags = quantized.flags[quantized.flags.index("-ctk") :][:4]
    assert kv_flags == ("-ctk", "q8_0", "-ctv", "q8_0")
    slots = what_if(model, profile, ctx=32768, parallel=4, kv_type="f16")
    assert slots.params.unified and "--kv-unified" in slots.flags
    assert [point.ngl for point in slots.curve] == [0]
    assert slots.curve[0].max_ctx == max_context(model, slots.params, profile)


def test_what_if_beyond_the_model_s_context_is_capped() -> None:
    model = llama_8b()
    result = what_if(model, cpu_box(24), ctx=10**7, parallel=1, kv_type="q4_0")
    assert result.params.ctx == model.context_length


def test_what_if_on_a_small_gpu_moves_layers_to_the_cpu_for_a_long_context() -> None:
    model = llama_8b()
    profile = gpu_box(RTX_3060TI)
    short = what_if(model, profile, ctx=8192, parallel=1, kv_type="f16")
    assert short.fits and short.params.ngl == -1
    long = what_if(model, profile, ctx=65536, parallel=1, kv_type="f16")
    assert long.fits and 0 <= long.params.ngl < model.n_layer + 1
    assert gpu_needs(long.estimate)["gpu0"] <= RTX_3060TI.memory_free - GIB
    more = estimate(model, replace(long.params, ngl=long.params.ngl + 1), gpus=1)
    assert not fits(more, profile)
    # the curve matches the recommendation's for the same slots and KV type
    advice = recommend(model, profile, ctx=65536, parallel=1)
    if advice.params.cache_type_k == "f16":
        assert long.curve == advice.curve


def test_what_if_that_fits_nowhere_says_so_at_full_offload() -> None:
    model = llama_8b()
    profile = HardwareProfile(ZEN4, MemoryInfo(16 * GIB, 6 * GIB), (RTX_3060TI,))
    result = what_if(model, profile, ctx=131072, parallel=8, kv_type="f16")
    assert not result.fits and result.params.ngl == -1
    assert result.params.ctx == 131072 and result.flags[:4] == ("-c", "131072", "-np", "8")
