"""GGUF files with the shapes no small real model covers: MoE, Mamba-2 (SSM), LFM2 (attention +
short convolution) and DeepSeek-2 (MLA), written with the `gguf` package's writer.

Memory depends on shapes, not on the weights' values, so the weights are random quantized
blocks with a small fixed scale (the model talks nonsense, but llama-server loads and runs it).
`scale` shrinks every width for fast tests; `scale=1` gives the realistic (scaled-down) shapes
the fit bench loads into the real llama-server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHAPES = ("moe", "ssm", "hybrid", "mla")
_BYTE_TOKEN_TYPE = 6
_NORMAL_TOKEN_TYPE = 1
_CONTROL_TOKEN_TYPE = 3


@dataclass
class _Model:
    """Tensors and keys of one GGUF to write."""

    arch: str
    keys: dict[str, Any] = field(default_factory=dict)
    tensors: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)

    def tensor(self, name: str, shape: tuple[int, ...], kind: str = "Q4_0") -> None:
        self.tensors.append((name, shape, kind))


def write_shape(kind: str, path: Path, *, scale: int = 1, seed: int = 0) -> Path:
    """Write the synthetic model `kind` (one of SHAPES) to `path`; `scale` divides its widths."""
    builders: dict[str, Callable[[int], _Model]] = {
        "moe": _moe,
        "ssm": _ssm,
        "hybrid": _hybrid,
        "mla": _mla,
    }
    model = builders[kind](scale)
    _write(model, path, seed)
    return path


def _w(value: int, scale: int, floor: int = 32) -> int:
    """A width divided by `scale`, kept a multiple of 32 (the quant block) and at least `floor`."""
    return max(floor, value // scale // 32 * 32)


def _common(model: _Model, n_embd: int, n_layer: int, vocab: int) -> None:
    arch = model.arch
    model.keys.update(
        {
            f"{arch}.context_length": 32768,
            f"{arch}.embedding_length": n_embd,
            f"{arch}.block_count": n_layer,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
            "_vocab": vocab,
        }
    )
    model.tensor("token_embd.weight", (n_embd, vocab), "Q8_0")
    model.tensor("output.weight", (n_embd, vocab), "Q8_0")


def _moe(scale: int) -> _Model:
    """Qwen3-MoE shaped: GQA attention with q/k norms, 32 experts of which 4 run per token."""
    n_embd, n_layer, n_head, n_head_kv, head = _w(1024, scale), 8, 16, 4, _w(64, scale)
    n_expert, n_used, ff_exp = 32, 4, _w(384, scale)
    model = _Model("qwen3moe")
    _common(model, n_embd, n_layer, 32000 // scale)
    a = model.arch
    model.keys.update(
        {
            f"{a}.feed_forward_length": ff_exp * 4,
            f"{a}.attention.head_count": n_head,
            f"{a}.attention.head_count_kv": n_head_kv,
            f"{a}.attention.key_length": head,
            f"{a}.attention.value_length": head,
            f"{a}.rope.freq_base": 1000000.0,
            f"{a}.expert_count": n_expert,
            f"{a}.expert_used_count": n_used,
            f"{a}.expert_feed_forward_length": ff_exp,
        }
    )
    model.tensor("output_norm.weight", (n_embd,), "F32")
    for i in range(n_layer):
        b = f"blk.{i}."
        _attention(model, b, n_embd, n_head, n_head_kv, head, qk_norm=True)
        model.tensor(b + "ffn_norm.weight", (n_embd,), "F32")
        model.tensor(b + "ffn_gate_inp.weight", (n_embd, n_expert), "F32")
        model.tensor(b + "ffn_gate_exps.weight", (n_embd, ff_exp, n_expert))
        model.tensor(b + "ffn_up_exps.weight", (n_embd, ff_exp, n_expert))
        model.tensor(b + "ffn_down_exps.weight", (ff_exp, n_embd, n_expert))
    return model


def _ssm(scale: int) -> _Model:
    """Mamba-2 shaped: 24 SSM layers, d_inner = 2 * n_embd, state 128, heads of 64."""
    n_embd, n_layer = _w(768, scale), 24 // min(scale, 4)
    d_inner, d_state, n_group, d_conv = 2 * n_embd, 128 // scale, 1, 4
    n_head = d_inner // 64 if scale == 1 else d_inner // 32
    model = _Model("mamba2")
    _common(model, n_embd, n_layer, 32000 // scale)
    a = model.arch
    model.keys.update(
        {
            f"{a}.feed_forward_length": 0,
            f"{a}.attention.head_count": 0,
            f"{a}.ssm.conv_kernel": d_conv,
            f"{a}.ssm.inner_size": d_inner,
            f"{a}.ssm.state_size": d_state,
            f"{a}.ssm.time_step_rank": n_head,
            f"{a}.ssm.group_count": n_group,
        }
    )
    model.tensor("output_norm.weight", (n_embd,), "F32")
    conv_dim = d_inner + 2 * n_group * d_state
    for i in range(n_layer):
        b = f"blk.{i}."
        model.tensor(b + "attn_norm.weight", (n_embd,), "F32")
        model.tensor(b + "ssm_in.weight", (n_embd, 2 * d_inner + 2 * n_group * d_state + n_head))
        model.tensor(b + "ssm_conv1d.weight", (d_conv, conv_dim), "F32")
        model.tensor(b + "ssm_conv1d.bias", (conv_dim,), "F32")
        model.tensor(b + "ssm_dt.bias", (n_head,), "F32")
        model.tensor(b + "ssm_a", (1, n_head), "F32")
        model.tensor(b + "ssm_d", (1, n_head), "F32")
        model.tensor(b + "ssm_norm.weight", (d_inner // n_group, n_group), "F32")
        model.tensor(b + "ssm_out.weight", (d_inner, n_embd))
    return model


def _hybrid(scale: int) -> _Model:
    """LFM2 shaped: 16 layers, 6 of them GQA attention, the rest gated short convolutions."""
    n_embd, n_layer, n_head, n_head_kv, l_cache = _w(1024, scale), 16, 16, 8, 3
    head = n_embd // n_head
    n_ff = _w(4608, scale)
    attention_layers = {2, 5, 8, 10, 12, 14}
    model = _Model("lfm2")
    _common(model, n_embd, n_layer, 32000 // scale)
    a = model.arch
    model.keys.update(
        {
            f"{a}.feed_forward_length": n_ff,
            f"{a}.attention.head_count": n_head,
            f"{a}.attention.head_count_kv": [
                n_head_kv if i in attention_layers else 0 for i in range(n_layer)
            ],
            f"{a}.rope.freq_base": 1000000.0,
            f"{a}.shortconv.l_cache": l_cache,
        }
    )
    model.tensor("token_embd_norm.weight", (n_embd,), "F32")
    for i in range(n_layer):
        b = f"blk.{i}."
        if i in attention_layers:
            _attention(model, b, n_embd, n_head, n_head_kv, head, qk_norm=True)
        else:
            model.tensor(b + "attn_norm.weight", (n_embd,), "F32")
            model.tensor(b + "shortconv.conv.weight", (l_cache, n_embd), "F32")
            model.tensor(b + "shortconv.in_proj.weight", (n_embd, 3 * n_embd))
            model.tensor(b + "shortconv.out_proj.weight", (n_embd, n_embd))
        _dense_ffn(model, b, n_embd, n_ff)
    return model


def _mla(scale: int) -> _Model:
    """DeepSeek-2 shaped: multi-head latent attention (the cache holds the latent), MoE FFN."""
    n_embd, n_layer, n_head = _w(1024, scale), 8, 16
    q_lora, kv_lora, rope, nope, v_head = _w(384, scale), _w(256, scale), 32, 64, 64
    n_expert, n_used, n_shared, ff_exp, n_ff = 16, 4, 1, _w(256, scale), _w(2048, scale)
    model = _Model("deepseek2")
    _common(model, n_embd, n_layer, 32000 // scale)
    a = model.arch
    model.keys.update(
        {
            f"{a}.feed_forward_length": n_ff,
            f"{a}.leading_dense_block_count": 1,
            f"{a}.attention.head_count": n_head,
            f"{a}.attention.head_count_kv": 1,
            f"{a}.attention.q_lora_rank": q_lora,
            f"{a}.attention.kv_lora_rank": kv_lora,
            f"{a}.attention.key_length": kv_lora + rope,
            f"{a}.attention.value_length": kv_lora,
            f"{a}.attention.key_length_mla": nope + rope,
            f"{a}.attention.value_length_mla": v_head,
            f"{a}.rope.dimension_count": rope,
            f"{a}.rope.freq_base": 10000.0,
            f"{a}.expert_count": n_expert,
            f"{a}.expert_used_count": n_used,
            f"{a}.expert_shared_count": n_shared,
            f"{a}.expert_feed_forward_length": ff_exp,
            f"{a}.expert_weights_scale": 1.0,
            f"{a}.expert_weights_norm": True,
            f"{a}.expert_gating_func": 2,
        }
    )
    model.tensor("output_norm.weight", (n_embd,), "F32")
    for i in range(n_layer):
        b = f"blk.{i}."
        model.tensor(b + "attn_norm.weight", (n_embd,), "F32")
        model.tensor(b + "attn_q_a_norm.weight", (q_lora,), "F32")
        model.tensor(b + "attn_kv_a_norm.weight", (kv_lora,), "F32")
        model.tensor(b + "attn_q_a.weight", (n_embd, q_lora))
        model.tensor(b + "attn_q_b.weight", (q_lora, n_head * (nope + rope)))
        model.tensor(b + "attn_kv_a_mqa.weight", (n_embd, kv_lora + rope))
        model.tensor(b + "attn_k_b.weight", (nope, kv_lora, n_head), "Q8_0")
        model.tensor(b + "attn_v_b.weight", (kv_lora, v_head, n_head), "Q8_0")
        model.tensor(b + "attn_output.weight", (n_head * v_head, n_embd))
        model.tensor(b + "ffn_norm.weight", (n_embd,), "F32")
        if i == 0:
            _dense_ffn(model, b, n_embd, n_ff, norm=False)
            continue
        model.tensor(b + "ffn_gate_inp.weight", (n_embd, n_expert), "F32")
        model.tensor(b + "exp_probs_b.bias", (n_expert,), "F32")
        model.tensor(b + "ffn_gate_exps.weight", (n_embd, ff_exp, n_expert))
        model.tensor(b + "ffn_up_exps.weight", (n_embd, ff_exp, n_expert))
        model.tensor(b + "ffn_down_exps.weight", (ff_exp, n_embd, n_expert))
        model.tensor(b + "ffn_gate_shexp.weight", (n_embd, ff_exp * n_shared))
        model.tensor(b + "ffn_up_shexp.weight", (n_embd, ff_exp * n_shared))
        model.tensor(b + "ffn_down_shexp.weight", (ff_exp * n_shared, n_embd))
    return model


def _attention(
    model: _Model, b: str, n_embd: int, n_head: int, n_head_kv: int, head: int, *, qk_norm: bool
) -> None:
    model.tensor(b + "attn_norm.weight", (n_embd,), "F32")
    model.tensor(b + "attn_q.weight", (n_embd, n_head * head))
    model.tensor(b + "attn_k.weight", (n_embd, n_head_kv * head))
    model.tensor(b + "attn_v.weight", (n_embd, n_head_kv * head))
    model.tensor(b + "attn_output.weight", (n_head * head, n_embd))
    if qk_norm:
        model.tensor(b + "attn_q_norm.weight", (head,), "F32")
        model.tensor(b + "attn_k_norm.weight", (head,), "F32")


def _dense_ffn(model: _Model, b: str, n_embd: int, n_ff: int, *, norm: bool = True) -> None:
    if norm:
        model.tensor(b + "ffn_norm.weight", (n_embd,), "F32")
    model.tensor(b + "ffn_gate.weight", (n_embd, n_ff))
    model.tensor(b + "ffn_up.weight", (n_embd, n_ff))
    model.tensor(b + "ffn_down.weight", (n_ff, n_embd))


def _vocab(count: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary: control tokens, the 256 byte tokens, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    types = [_CONTROL_TOKEN_TYPE] * 3 + [_BYTE_TOKEN_TYPE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    number = 0
    while len(tokens) < count:
        piece, value = "", number
        while True:
            piece = letters[value % 26] + piece
            value //= 26
            if value == 0:
                break
        tokens.append("\u2581" + piece)
        types.append(_NORMAL_TOKEN_TYPE)
        number += 1
    scores = [0.0] * 259 + [-float(i) for i in range(count - 259)]
    return tokens, scores, types


def _write(model: _Model, path: Path, seed: int) -> None:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), model.arch)
    vocab = int(model.keys.pop("_vocab"))
    for key, value in model.keys.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
    writer.add_name(f"synthetic {model.arch}")
    writer.add_file_type(2)  # mostly Q4_0
    tokens, scores, types = _vocab(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    for name, shape, kind in model.tensors:
        data = _tensor_data(rng, shape, kind, name)
        raw_dtype = None if kind == "F32" else gguf.GGMLQuantizationType[kind]
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensor_data(rng: Any, shape: tuple[int, ...], kind: str, name: str) -> Any:
    """Values for one tensor, in numpy's row-major order (the reverse of ggml's shape)."""
    import numpy as np

    rows = tuple(reversed(shape))
    if kind == "F32":
        if name.endswith(("norm.weight", "ssm_d")):
            return np.ones(rows, dtype=np.float32)
        if name.endswith("ssm_a"):
            return np.full(rows, -1.0, dtype=np.float32)
        return (rng.standard_normal(rows, dtype=np.float32) * 0.02).astype(np.float32)
    # Quantized blocks of 32 values: an f16 scale, then 16 nibble bytes (Q4_0) or 32 int8 (Q8_0).
    block_bytes = {"Q4_0": 16, "Q8_0": 32}[kind]
    blocks = (*rows[:-1], rows[-1] // 32)
    raw = np.empty((*blocks, 2 + block_bytes), dtype=np.uint8)
    raw[..., :2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    raw[..., 2:] = rng.integers(0, 256, size=(*blocks, block_bytes), dtype=np.uint8)
    return raw.reshape((*rows[:-1], rows[-1] // 32 * (2 + block_bytes)))
