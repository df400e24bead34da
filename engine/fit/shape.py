"""A model's shape as llama.cpp derives it from GGUF metadata: layers, heads, per-layer KV
widths, sliding-window layers, MLA, SSM / recurrent state, experts, tensors.

Where the file does not say which layers use the sliding window, llama.cpp hard-codes a
pattern per architecture; `SWA_PATTERNS` mirrors that table (`set_swa_pattern(n)`: every
n-th layer is global, the others slide).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from muxtui.engine.fit.gguf import GgufFile, TensorInfo, Value, read_gguf

# llama.cpp's set_swa_pattern(n) per architecture, where the file has no pattern key.
SWA_PATTERNS = {
    "gemma2": 2,
    "gemma3": 6,  # 5 local : 1 global
    "gemma3n": 5,
    "gemma-embedding": 6,
    "cohere2": 4,
    "gpt-oss": 2,
    "llama4": 4,  # chunked attention: three chunked layers, then a global one
    "exaone4": 4,
}
# Every layer carries recurrent state and no KV cache.
RECURRENT_ARCHS = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# Recurrent on the layers whose head_count_kv is 0, attention on the others.
HYBRID_BY_KV_HEADS = frozenset(
    {"lfm2", "lfm2moe", "jamba", "granitehybrid", "nemotron_h", "nemotron_h_moe", "plamo2"}
)
# Every layer has both an attention block and a recurrent (Mamba) block side by side.
HYBRID_PARALLEL = frozenset({"falcon-h1"})
# Attention on every `full_attention_interval`-th layer, gated delta-net state on the rest.
HYBRID_BY_INTERVAL = frozenset({"qwen3next", "qwen35", "qwen35moe", "kimi-linear"})


@dataclass(frozen=True)
class ModelShape:
    """The numbers that decide a model's memory in llama.cpp."""

    path: str
    file_bytes: int
    architecture: str
    name: str
    parameters: int
    n_layer: int
    n_embd: int
    n_vocab: int
    vocab_bytes: int  # bytes of the token strings
    n_merges: int
    context_length: int
    n_ff: tuple[int, ...]  # per layer; 0 where a layer has no dense feed-forward
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]  # per layer; 0 on recurrent layers of hybrids
    head_dim_k: int
    head_dim_v: int
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    recurrent_layers: tuple[bool, ...] = ()
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    key_length_mla: int = 0  # nonzero: the KV cache holds the compressed latent (MLA)
    value_length_mla: int = 0
    n_rot: int = 0
    ssm_conv_kernel: int = 0
    ssm_inner: int = 0
    ssm_state: int = 0
    ssm_groups: int = 0
    ssm_dt_rank: int = 0
    shortconv_l_cache: int = 0
    wkv_head_size: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    expert_ff: int = 0
    leading_dense_blocks: int = 0
    tensors: tuple[TensorInfo, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention: K holds kv_lora_rank + rope dims, V is not cached."""
        return self.key_length_mla > 0 and self.value_length_mla > 0

    @property
    def has_swa(self) -> bool:
        """Whether some layers use a sliding window."""
        return self.sliding_window > 0 and any(self.swa_layers)

    @property
    def has_recurrent(self) -> bool:
        """Whether some layers carry recurrent state (SSM, RWKV, short convolution)."""
        return any(self.recurrent_layers)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all weights."""
        return sum(tensor.nbytes for tensor in self.tensors)

    def has_attention(self, layer: int) -> bool:
        """Whether `layer` keeps a KV cache."""
        return self.n_head_kv[layer] > 0

    def kv_width_k(self, layer: int) -> int:
        """Values of K cached per token in `layer` (n_embd_k_gqa)."""
        return self.head_dim_k * self.n_head_kv[layer]

    def kv_width_v(self, layer: int) -> int:
        """Values of V cached per token in `layer`; 0 for MLA, whose V is a view of K."""
        return 0 if self.is_mla else self.head_dim_v * self.n_head_kv[layer]

    @property
    def recurrent_r(self) -> int:
        """Values of convolution / token-shift state per layer per sequence (n_embd_r)."""
        if self.wkv_head_size:
            return 2 * self.n_embd  # RWKV token shift (attention and FFN)
        if self.shortconv_l_cache:
            return self.n_embd * (self.shortconv_l_cache - 1)
        conv = max(0, self.ssm_conv_kernel - 1)
        return conv * (self.ssm_inner + 2 * self.ssm_groups * self.ssm_state)

    @property
    def recurrent_s(self) -> int:
        """Values of SSM / WKV state per layer per sequence (n_embd_s)."""
        if self.wkv_head_size:
            return self.n_embd * self.wkv_head_size
        return self.ssm_state * self.ssm_inner


def read_model(path: str | os.PathLike[str]) -> ModelShape:
    """Read the GGUF at `path` and derive its shape (blocking); raises GgufError."""
    return model_shape(read_gguf(path))


def model_shape(gguf: GgufFile) -> ModelShape:
    """The shape llama.cpp would derive from `gguf`'s metadata."""
    arch = gguf.architecture
    notes: list[str] = []

    def num(key: str, default: int = 0) -> int:
        value = gguf.arch_value(key)
        if isinstance(value, tuple):
            return int(max((v for v in value if isinstance(v, int | float)), default=default))
        return int(value) if isinstance(value, int | float) else default

    n_layer = num("block_count")
    n_embd = num("embedding_length")
    n_head = _per_layer(gguf.arch_value("attention.head_count"), n_layer, 0)
    n_head_kv = _per_layer(gguf.arch_value("attention.head_count_kv"), n_layer, -1)
    n_head_kv = tuple(n_head[i] if kv < 0 else kv for i, kv in enumerate(n_head_kv))
    first_heads = max(n_head, default=0) or 1
    head_k = num("attention.key_length", n_embd // first_heads if n_embd else 0)
    head_v = num("attention.value_length", head_k)
    tokens = gguf.arrays.get("tokenizer.ggml.tokens")
    kept_tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    n_vocab = tokens.count if tokens else len(kept_tokens) if isinstance(kept_tokens, tuple) else 0
    n_vocab = n_vocab or num("vocab_size")
    merges = gguf.arrays.get("tokenizer.ggml.merges")
    kept_merges = gguf.metadata.get("tokenizer.ggml.merges")
    n_merges = merges.count if merges else len(kept_merges) if isinstance(kept_merges, tuple) else 0
    recurrent = _recurrent_layers(arch, gguf, n_layer, n_head_kv)
    if arch in RECURRENT_ARCHS or arch in HYBRID_BY_INTERVAL:
        n_head_kv = tuple(0 if rec else kv for rec, kv in zip(recurrent, n_head_kv, strict=True))
    window = num("attention.sliding_window")
    swa = _swa_layers(arch, gguf.arch_value("attention.sliding_window_pattern"), n_layer, window)
    if window and not any(swa):
        notes.append(
            f"{arch} has a sliding window but llama.cpp's layer pattern for it is not known "
            "here: every layer is counted at full context (an upper bound)"
        )
    return ModelShape(
        path=gguf.path,
        file_bytes=gguf.file_bytes,
        architecture=arch,
        name=str(gguf.metadata.get("general.name", "")),
        parameters=sum(tensor.elements for tensor in gguf.tensors),
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        vocab_bytes=tokens.string_bytes if tokens else 0,
        n_merges=n_merges,
        context_length=num("context_length"),
        n_ff=_per_layer(gguf.arch_value("feed_forward_length"), n_layer, 0),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        sliding_window=window,
        swa_layers=swa,
        recurrent_layers=recurrent,
        kv_lora_rank=num("attention.kv_lora_rank"),
        q_lora_rank=num("attention.q_lora_rank"),
        key_length_mla=num("attention.key_length_mla"),
        value_length_mla=num("attention.value_length_mla"),
        n_rot=num("rope.dimension_count", head_k),
        ssm_conv_kernel=num("ssm.conv_kernel"),
        ssm_inner=num("ssm.inner_size"),
        ssm_state=num("ssm.state_size"),
        ssm_groups=num("ssm.group_count"),
        ssm_dt_rank=num("ssm.time_step_rank"),
        shortconv_l_cache=num("shortconv.l_cache"),
        wkv_head_size=num("wkv.head_size"),
        n_expert=num("expert_count"),
        n_expert_used=num("expert_used_count"),
        n_expert_shared=num("expert_shared_count"),
        expert_ff=num("expert_feed_forward_length"),
        leading_dense_blocks=num("leading_dense_block_count"),
        tensors=gguf.tensors,
        notes=tuple(notes),
    )


def _per_layer(value: Value | None, n_layer: int, default: int) -> tuple[int, ...]:
    """A scalar or per-layer array key as one value per layer."""
    if isinstance(value, tuple):
        numbers = [int(v) for v in value if isinstance(v, int | float)]
        numbers += [numbers[-1] if numbers else default] * (n_layer - len(numbers))
        return tuple(numbers[:n_layer])
    if isinstance(value, int | float):
        return (int(value),) * n_layer
    return (default,) * n_layer


def swa_pattern(n_layer: int, every: int) -> tuple[bool, ...]:
    """llama.cpp's set_swa_pattern(every): every `every`-th layer is global, the rest slide."""
    return tuple(every == 0 or (layer % every) < (every - 1) for layer in range(n_layer))


def _swa_layers(arch: str, pattern: Value | None, n_layer: int, window: int) -> tuple[bool, ...]:
    if window <= 0:
        return (False,) * n_layer
    if isinstance(pattern, tuple):
        flags = [bool(flag) for flag in pattern][:n_layer]
        return tuple(flags + [False] * (n_layer - len(flags)))
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        return swa_pattern(n_layer, pattern)
    every = SWA_PATTERNS.get(arch)
    return swa_pattern(n_layer, every) if every else (False,) * n_layer


def _recurrent_layers(
    arch: str, gguf: GgufFile, n_layer: int, n_head_kv: Sequence[int]
) -> tuple[bool, ...]:
    if arch in RECURRENT_ARCHS or arch in HYBRID_PARALLEL:
        return (True,) * n_layer
    if arch in HYBRID_BY_KV_HEADS:
        return tuple(kv == 0 for kv in n_head_kv)
    if arch in HYBRID_BY_INTERVAL:
        interval = gguf.arch_value("full_attention_interval", 4)
        every = int(interval) if isinstance(interval, int | float) and interval else 4
        return tuple((layer + 1) % every != 0 for layer in range(n_layer))
    return (False,) * n_layer
