"""The KV cache arithmetic against values worked out by hand from each shape: GQA, sliding
window (Gemma 3's real header), MLA, SSM and a hybrid, at llama.cpp's context rounding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from muxtui.engine.fit.estimate import FitParams, context_cells, estimate, kv_row_bytes
from muxtui.engine.fit.shape import ModelShape, read_model
from tests.fit_shapes import write_shape
from tests.test_fit_gguf import gemma_header

MIB = 2**20


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelShape]:
    """The synthetic shapes at a quarter of their widths (a few MB each)."""
    folder = tmp_path_factory.mktemp("shapes")
    return {
        kind: read_model(write_shape(kind, folder / f"{kind}.gguf", scale=4))
        for kind in ("moe", "ssm", "hybrid", "mla")
    }


def kv(shape: ModelShape, **params: Any) -> int:
    return estimate(shape, FitParams(**params)).host.kv_cache


def test_context_rounding_follows_llama_cpp(small: dict[str, ModelShape]) -> None:
    moe = small["moe"]
    # n_ctx pads to 256; per-slot contexts pad again and n_ctx becomes slots x that.
    assert context_cells(moe, FitParams(ctx=1000, parallel=1)) == (1024, 1024, 0)
    assert context_cells(moe, FitParams(ctx=1000, parallel=3)) == (1536, 512, 0)
    assert context_cells(moe, FitParams(ctx=512, parallel=4)) == (1024, 256, 0)
    # auto slots (-np unset): four slots sharing one unified stream of the whole context
    assert context_cells(moe, FitParams(ctx=4096, parallel=0)) == (4096, 4096, 0)
    assert context_cells(moe, FitParams(ctx=4096, parallel=4, kv_unified=True)) == (
        4096,
        4096,
        0,
    )


def test_gqa_kv_cache(small: dict[str, ModelShape]) -> None:
    moe = small["moe"]
    assert (moe.n_layer, moe.n_head[0], moe.n_head_kv[0], moe.head_dim_k) == (8, 16, 4, 32)
    per_cell = 2 * (4 * 32 * 2)  # K and V: 4 KV heads x 32 dims x f16, in each of 8 layers
    assert kv(moe, ctx=4096, parallel=1) == 8 * 4096 * per_cell == 16 * MIB
    # four slots split the same context into four streams: the total stays
    assert kv(moe, ctx=4096, parallel=4) == 16 * MIB
    assert kv(moe, ctx=1000, parallel=3) == 8 * 1536 * per_cell
    # quantized caches: 128 values per row = 4 blocks of 32
    assert kv(moe, ctx=4096, parallel=1, cache_type_k="q8_0", cache_type_v="q8_0") == (
        8 * 4096 * 2 * 4 * 34
    )
    assert kv(moe, ctx=4096, parallel=1, cache_type_k="q8_0", cache_type_v="q4_0") == (
        8 * 4096 * (4 * 34 + 4 * 18)
    )
    assert kv_row_bytes("q4_0", 128) == 72


def test_sliding_window_kv_cache_of_gemma3() -> None:
    gemma = gemma_header()
    assert gemma.sliding_window == 512
    assert sum(gemma.swa_layers) == 15  # 5 local : 1 global over 18 layers
    assert [i for i, sliding in enumerate(gemma.swa_layers) if not sliding] == [5, 11, 17]
    per_cell = 2 * 256 * 2  # one KV head of 256 dims, K and V, f16
    # full layers hold the context; sliding layers pad(window + ubatch) = 1024 cells
    assert kv(gemma, ctx=4096, parallel=1) == 3 * 4096 * per_cell + 15 * 1024 * per_cell
    assert kv(gemma, ctx=4096, parallel=1) == 27 * MIB  # llama-server logs 12 + 15 MiB
    # four separate slots: the window is kept per slot
    assert kv(gemma, ctx=4096, parallel=4) == 12 * MIB + 60 * MIB
    # auto slots share one stream: the window grows with the slots (4 x 512 + 512)
    assert kv(gemma, ctx=4096, parallel=0) == 12 * MIB + 15 * 2560 * per_cell
    # --swa-full keeps the whole context on the sliding layers too
    assert kv(gemma, ctx=4096, parallel=1, swa_full=True) == 18 * 4096 * per_cell
    # a context shorter than the window: the sliding cache is the context
    assert kv(gemma, ctx=512, parallel=1) == 18 * 512 * per_cell


def test_mla_caches_the_latent_not_the_heads(small: dict[str, ModelShape]) -> None:
    mla = small["mla"]
    assert mla.is_mla
    assert (mla.kv_lora_rank, mla.n_rot, mla.head_dim_k, mla.n_head[0]) == (64, 32, 96, 16)
    per_cell = (64 + 32) * 2  # one latent of kv_lora_rank + rope dims, f16; no V
    assert kv(mla, ctx=4096, parallel=1) == 8 * 4096 * per_cell == 6 * MIB
    # what the per-head formula would claim: 16 heads x (96 K + 64 V) dims
    naive = 8 * 4096 * 16 * (96 + 64) * 2
    assert naive / kv(mla, ctx=4096, parallel=1) > 25


def test_ssm_state_is_per_slot_not_per_token(small: dict[str, ModelShape]) -> None:
    ssm = small["ssm"]
    assert (ssm.ssm_inner, ssm.ssm_state, ssm.ssm_groups, ssm.ssm_conv_kernel) == (384, 32, 1, 4)
    conv = 3 * (384 + 2 * 32)  # (d_conv - 1) x (d_inner + 2 x groups x d_state)
    scan = 32 * 384  # d_state x d_inner
    per_slot = ssm.n_layer * (conv + scan) * 4  # f32
    for ctx in (512, 32768):
        one = estimate(ssm, FitParams(ctx=ctx, parallel=1)).host
        assert (one.kv_cache, one.recurrent) == (0, per_slot)
    four = estimate(ssm, FitParams(ctx=4096, parallel=4))
    assert four.host.recurrent == 4 * per_slot
    # a prompt longer than one ubatch leaves two checkpoints of the whole state behind
    assert four.host.checkpoints == 2 * per_slot
    assert four.checkpoint_ceiling == 4 * 32 * per_slot


def test_hybrid_splits_attention_and_convolution_layers(small: dict[str, ModelShape]) -> None:
    hybrid = small["hybrid"]
    attention = [i for i in range(hybrid.n_layer) if hybrid.has_attention(i)]
    assert attention == [2, 5, 8, 10, 12, 14]
    assert sum(hybrid.recurrent_layers) == 10
    per_cell = 2 * 8 * 16 * 2  # 8 KV heads x 16 dims, K and V, f16
    result = estimate(hybrid, FitParams(ctx=4096, parallel=2))
    assert result.host.kv_cache == 6 * 4096 * per_cell
    # short convolution: (l_cache - 1) x n_embd values per layer and slot
    assert result.host.recurrent == 2 * 10 * (2 * 256) * 4


def test_repacked_weights_are_held_twice(small: dict[str, ModelShape]) -> None:
    moe = small["moe"]
    repacked = sum(
        t.nbytes
        for t in moe.tensors
        if t.type_name == "Q4_0" and len(t.shape) in (2, 3) and t.shape[1] % 8 == 0
    )
    assert repacked > 0
    on_x86 = estimate(moe, FitParams(ctx=512), repacks=True).host
    elsewhere = estimate(moe, FitParams(ctx=512), repacks=False).host
    assert on_x86.weights_copied == repacked
    assert elsewhere.weights_copied == 0
    # mapped: the file span of the tensors used in place (every page in it gets read)
    span = max(t.offset + t.nbytes for t in moe.tensors) - min(t.offset for t in moe.tensors)
    assert elsewhere.weights_mapped == span
    assert on_x86.weights_mapped <= span
    assert on_x86.weights > elsewhere.weights
    no_mmap = estimate(moe, FitParams(ctx=512, mmap=False)).host
    assert no_mmap.weights_mapped == 0
    assert no_mmap.weights_copied == moe.tensor_bytes


def test_gpu_offload_moves_layers_and_their_cache(small: dict[str, ModelShape]) -> None:
    moe = small["moe"]
    everything = estimate(moe, FitParams(ctx=4096, ngl=-1), gpus=1)
    half = estimate(moe, FitParams(ctx=4096, ngl=4), gpus=1)
    cpu_only = estimate(moe, FitParams(ctx=4096, ngl=0), gpus=1)
    per_layer_kv = 4096 * 2 * (4 * 32 * 2)
    assert everything.device("gpu0").kv_cache == 8 * per_layer_kv
    assert half.device("gpu0").kv_cache == 4 * per_layer_kv
    assert half.host.kv_cache == 4 * per_layer_kv
    # -ngl 0 keeps weights and cache in RAM (a GPU build still opens its context there)
    assert cpu_only.device("gpu0").weights == cpu_only.device("gpu0").kv_cache == 0
    assert cpu_only.host.kv_cache == 8 * per_layer_kv
    assert everything.device("gpu0").weights > half.device("gpu0").weights > 0
    # the token embeddings stay in RAM even at full offload
    embd = next(t.nbytes for t in moe.tensors if t.name == "token_embd.weight")
    assert everything.host.weights_mapped >= embd


def test_written_shapes_read_back(tmp_path: Path) -> None:
    path = write_shape("ssm", tmp_path / "ssm.gguf", scale=8)
    shape = read_model(path)
    assert shape.architecture == "mamba2"
    assert all(shape.recurrent_layers)
    assert shape.file_bytes == path.stat().st_size
