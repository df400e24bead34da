"""How much memory llama-server will take for a model, per device, before it is started.

The arithmetic follows llama.cpp (the build muxtui bundles, upstream 7e4c0a9): context
rounding, unified vs per-slot KV streams, sliding-window cache sizing, MLA's latent cache,
recurrent state per slot, the CPU backend's repacked weight copies, the output and compute
buffers, and the context checkpoints the server saves for models whose cache cannot be
rolled back. `calibration.py` holds the few constants that were measured, not derived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from muxtui.engine.fit.calibration import (
    CHECKPOINTS_PER_SLOT,
    GPU_RUNTIME_BYTES,
    HOST_BASE_ANON,
    HOST_LIBRARIES,
    PER_MERGE,
    PER_TOKEN,
)
from muxtui.engine.fit.shape import ModelShape

MIB = 2**20
PAD_CELLS = 256  # llama.cpp pads n_ctx, n_ctx_seq and the SWA cache to 256 cells
SERVER_AUTO_SLOTS = 4  # llama-server's `-np -1` (auto): four slots sharing one unified cache
# (values per block, bytes per block) for the KV cache types llama-server accepts.
KV_TYPES = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}
# Weight types the CPU backend repacks into an interleaved copy (ggml-cpu/repack.cpp) when a
# matrix has a multiple of 8 rows: the file's pages stay mapped, so the weight is held twice.
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
REPACKED_TYPES_AVX512 = frozenset({"Q2_K"})
# Weights read by row lookup, not matrix multiply: never repacked.
_LOOKUP_TENSORS = ("token_embd", "pos_embd", "per_layer_token_embd", "conv1d", "shortconv.conv")


@dataclass(frozen=True)
class FitParams:
    """The llama-server settings that decide memory."""

    ctx: int = 4096  # -c; 0 = the model's training context
    parallel: int = 1  # -np; 0 = llama-server's auto (4 slots, unified KV)
    kv_unified: bool | None = None  # --kv-unified; None = llama-server's default for `parallel`
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    ngl: int = -1  # -ngl; -1 = every layer and the output layer
    n_ubatch: int = 512
    swa_full: bool = False
    repack: bool = True  # --repack (default on)
    mmap: bool = True  # --load-mode mmap (default); False reads weights into anonymous memory
    cache_ram_mib: int = 8192  # --cache-ram; llama-server's default, -1 = unlimited
    ctx_checkpoints: int = CHECKPOINTS_PER_SLOT  # --ctx-checkpoints

    @property
    def slots(self) -> int:
        """Server slots (sequences)."""
        return SERVER_AUTO_SLOTS if self.parallel <= 0 else self.parallel

    @property
    def unified(self) -> bool:
        """Whether all slots share one KV stream."""
        return self.parallel <= 0 if self.kv_unified is None else self.kv_unified

    def flags(self, *, ngl: bool = True, cache_ram: bool = True) -> tuple[str, ...]:
        """These settings as llama-server arguments (`-ngl` and `--cache-ram` optional)."""
        flags = ["-c", str(self.ctx), "-np", str(self.slots)]
        if self.unified and self.parallel > 0:
            flags.append("--kv-unified")
        if ngl:
            flags += ["-ngl", "all" if self.ngl < 0 else str(self.ngl)]
        if self.cache_type_k != "f16":
            flags += ["-ctk", self.cache_type_k]
        if self.cache_type_v != "f16":
            flags += ["-ctv", self.cache_type_v]
        if self.swa_full:
            flags.append("--swa-full")
        if cache_ram:
            flags += ["--cache-ram", str(self.cache_ram_mib)]
        return tuple(flags)


@dataclass(frozen=True)
class DeviceEstimate:
    """Bytes one device holds for the model once it has answered a first request."""

    device: str  # "cpu" or "gpu0", "gpu1", ...
    weights_mapped: int = 0  # file pages mapped into the process (page cache)
    weights_reclaimable: int = 0  # of those, pages read once to repack: the kernel may drop them
    weights_copied: int = 0  # weights in anonymous memory or VRAM: repacked copies, uploads
    kv_cache: int = 0
    recurrent: int = 0
    output: int = 0
    compute: int = 0
    overhead: int = 0  # runtime: libraries, vocabulary, threads; a GPU's context
    checkpoints: int = 0  # context checkpoints the first request leaves behind

    @property
    def weights(self) -> int:
        """All weight bytes the device holds."""
        return self.weights_mapped + self.weights_copied

    @property
    def needed(self) -> int:
        """What must stay resident: the total less the pages only read once."""
        return self.total - self.weights_reclaimable

    @property
    def total(self) -> int:
        """Everything on this device."""
        return (
            self.weights
            + self.kv_cache
            + self.recurrent
            + self.output
            + self.compute
            + self.overhead
            + self.checkpoints
        )


@dataclass(frozen=True)
class Estimate:
    """A model's memory under `params`: per device, and how far it can grow."""

    params: FitParams
    n_ctx: int  # as llama.cpp rounds it
    n_ctx_seq: int  # context per slot
    kv_cells: int  # cells per KV stream
    swa_cells: int  # cells per sliding-window stream (0 without SWA)
    gpu_layers: int
    devices: tuple[DeviceEstimate, ...]
    prompt_cache: int  # the --cache-ram ceiling (grows with distinct conversations)
    checkpoint_ceiling: int  # every slot holding its maximum of context checkpoints
    notes: tuple[str, ...] = field(default_factory=tuple)

    def device(self, name: str) -> DeviceEstimate:
        """The estimate for `name` ("cpu", "gpu0", ...); an empty one if it holds nothing."""
        for device in self.devices:
            if device.device == name:
                return device
        return DeviceEstimate(name)

    @property
    def host(self) -> DeviceEstimate:
        """The CPU / system RAM part."""
        return self.device("cpu")

    @property
    def total(self) -> int:
        """All devices together."""
        return sum(device.total for device in self.devices)

    @property
    def weights(self) -> int:
        """Weight bytes on all devices."""
        return sum(device.weights for device in self.devices)

    @property
    def kv_cache(self) -> int:
        """KV cache plus recurrent state on all devices."""
        return sum(device.kv_cache + device.recurrent for device in self.devices)

    @property
    def compute(self) -> int:
        """Compute and output buffers on all devices."""
        return sum(device.compute + device.output for device in self.devices)

    @property
    def host_ceiling(self) -> int:
        """System RAM once the prompt cache and checkpoints have grown to their limits."""
        return self.host.total + self.prompt_cache + self.checkpoint_ceiling

    @property
    def host_needed(self) -> int:
        """RAM that must stay resident at the ceiling (pages read once to repack excluded)."""
        return self.host_ceiling - self.host.weights_reclaimable


def kv_row_bytes(kind: str, values: int) -> int:
    """Bytes of `values` cache values stored as `kind` (f16, q8_0, ...)."""
    per_block, block_bytes = KV_TYPES[kind]
    return -(-values // per_block) * block_bytes


def pad(value: int, to: int = PAD_CELLS) -> int:
    """`value` rounded up to a multiple of `to`."""
    return -(-value // to) * to


def context_cells(shape: ModelShape, params: FitParams) -> tuple[int, int, int]:
    """(n_ctx, n_ctx_seq, swa cells per stream) as llama_context and the iSWA cache size them."""
    n_ctx = pad(params.ctx if params.ctx > 0 else shape.context_length or 4096)
    if params.unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = pad(n_ctx // params.slots)
        n_ctx = n_ctx_seq * params.slots
    swa = 0
    if shape.has_swa:
        window = shape.sliding_window * (params.slots if params.unified else 1)
        swa = n_ctx_seq if params.swa_full else pad(min(n_ctx_seq, window + params.n_ubatch))
    return n_ctx, n_ctx_seq, swa


def estimate(
    shape: ModelShape,
    params: FitParams,
    *,
    gpus: int = 0,
    repacks: bool = True,
    repacks_q2k: bool = False,
    gpu_runtime: int = GPU_RUNTIME_BYTES,
) -> Estimate:
    """Memory for `shape` under `params` with `gpus` GPUs (layers split evenly among them).

    `repacks` says whether this CPU's backend repacks Q4_0/Q4_K/IQ4_NL weights (x86 with
    AVX2, ARM with dot product); `repacks_q2k` adds Q2_K (AVX-512).
    """
    n_ctx, n_ctx_seq, swa_cells = context_cells(shape, params)
    streams = 1 if params.unified else params.slots
    gpu_layers = 0 if gpus <= 0 else shape.n_layer + 1 if params.ngl < 0 else params.ngl
    first_gpu_layer = max(0, shape.n_layer - gpu_layers)
    output_on_gpu = gpus > 0 and gpu_layers > shape.n_layer
    names = ["cpu"] + [f"gpu{index}" for index in range(max(0, gpus))]
    parts: dict[str, dict[str, int]] = {name: {} for name in names}

    def place(layer: int | None) -> str:
        """The device of a layer (None: the output layer)."""
        if gpus <= 0:
            return "cpu"
        if layer is None:
            return "gpu0" if output_on_gpu else "cpu"
        if layer < first_gpu_layer:
            return "cpu"
        return f"gpu{(layer - first_gpu_layer) * gpus // max(1, shape.n_layer - first_gpu_layer)}"

    def add(device: str, key: str, amount: int) -> None:
        parts[device][key] = parts[device].get(key, 0) + amount

    allowed = REPACKED_TYPES | (REPACKED_TYPES_AVX512 if repacks_q2k else frozenset())
    span_start, span_end = -1, -1
    repacked: list[tuple[int, int]] = []
    for tensor in shape.tensors:
        device = place(_tensor_layer(tensor.name, shape.n_layer))
        if device != "cpu" or not params.mmap:
            add(device, "weights_copied", tensor.nbytes)
            continue
        lookup = any(part in tensor.name for part in _LOOKUP_TENSORS)
        if (
            params.repack
            and repacks
            and not lookup
            and tensor.type_name in allowed
            and len(tensor.shape) in (2, 3)
            and tensor.shape[1] % 8 == 0
        ):
            add("cpu", "weights_copied", tensor.nbytes)
            repacked.append((tensor.offset, tensor.nbytes))
            continue
        span_start = tensor.offset if span_start < 0 else min(span_start, tensor.offset)
        span_end = max(span_end, tensor.offset + tensor.nbytes)
    # After loading, llama.cpp unmaps the file outside the span of the tensors it uses in
    # place; inside it every page was read (repacked tensors too), so all of it stays resident.
    add("cpu", "weights_mapped", max(0, span_end - span_start))
    inside = sum(size for at, size in repacked if span_start <= at and at + size <= span_end)
    add("cpu", "weights_reclaimable", inside)

    per_seq_swa = 0
    per_seq_state = 0
    for layer in range(shape.n_layer):
        device = place(layer)
        if shape.has_attention(layer):
            sliding = shape.has_swa and shape.swa_layers[layer]
            cells = swa_cells if sliding else n_ctx_seq
            per_cell = kv_row_bytes(params.cache_type_k, shape.kv_width_k(layer))
            per_cell += kv_row_bytes(params.cache_type_v, shape.kv_width_v(layer))
            add(device, "kv_cache", streams * cells * per_cell)
            if sliding:  # a checkpoint keeps the cells inside the window
                per_seq_swa += min(shape.sliding_window, n_ctx_seq) * per_cell
        if shape.recurrent_layers and shape.recurrent_layers[layer]:
            state = 4 * (shape.recurrent_r + shape.recurrent_s)
            add(device, "recurrent", max(1, params.slots) * state)
            per_seq_state += state

    add(place(None), "output", shape.n_vocab * 4 * params.slots)
    for name in names:
        has_layers = (name == "cpu" and first_gpu_layer > 0) or name != "cpu"
        full = compute_bytes(shape, params, n_ctx_seq, swa_cells)
        if gpus <= 0 or has_layers:
            add(name, "compute", full)
        else:  # the host only embeds the input and gathers the output
            add(name, "compute", params.n_ubatch * 4 * 2 * shape.n_embd + shape.n_vocab * 4)
        if name != "cpu":
            add(name, "overhead", gpu_runtime)
    add("cpu", "overhead", host_overhead(shape))

    swa_checkpoint = 0 if params.swa_full else per_seq_swa
    checkpoint = swa_checkpoint + per_seq_state
    if checkpoint and params.ctx_checkpoints > 0:
        # The server checkpoints the state at each prompt batch that starts within one ubatch
        # of the prompt's end: two for a prompt longer than a ubatch. A recurrent state is
        # always whole; the earlier SWA checkpoint holds only the tokens before it.
        batches = 2 if n_ctx_seq > params.n_ubatch else 1
        add("cpu", "checkpoints", swa_checkpoint + batches * per_seq_state)
    unlimited = params.cache_ram_mib < 0
    devices = tuple(DeviceEstimate(name, **parts[name]) for name in names if parts[name])
    notes = list(shape.notes)
    if unlimited:
        notes.append("--cache-ram -1 lets the prompt cache grow without limit")
    return Estimate(
        params=params,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        kv_cells=n_ctx_seq,
        swa_cells=swa_cells,
        gpu_layers=min(gpu_layers, shape.n_layer + 1),
        devices=devices,
        prompt_cache=0 if unlimited else params.cache_ram_mib * MIB,
        checkpoint_ceiling=params.slots * max(0, params.ctx_checkpoints) * checkpoint,
        notes=tuple(notes),
    )


def _tensor_layer(name: str, n_layer: int) -> int | None:
    """The layer a tensor belongs to; None for the output layer, -1 for the input layer."""
    if name.startswith("blk."):
        number = name.split(".", 2)[1]
        if number.isdigit():
            return min(int(number), n_layer - 1)
    if name.startswith(("output", "token_embd_norm")):
        return None
    return -1


def compute_bytes(shape: ModelShape, params: FitParams, kv_cells: int, swa_cells: int) -> int:
    """The compute buffer llama.cpp reserves: one ubatch through the widest layer, the
    attention masks (f16, one row per cell) and one row of logits."""
    ubatch = params.n_ubatch
    widest = max((_layer_width(shape, layer) for layer in range(shape.n_layer)), default=0)
    floats = ubatch * (4 * shape.n_embd + widest)
    masks = 0
    if any(shape.has_attention(layer) for layer in range(shape.n_layer)):
        masks = kv_cells * ubatch * 2
        if swa_cells:
            masks += swa_cells * ubatch * 2
    states = 0
    if shape.has_recurrent and shape.ssm_state:
        states = shape.ssm_state * shape.ssm_inner * 4 * params.slots
    return floats * 4 + masks + shape.n_vocab * 4 + states


def _layer_width(shape: ModelShape, layer: int) -> int:
    """Values per token the widest step of `layer` keeps alive at once."""
    widths = []
    moe = shape.n_expert > 0 and layer >= shape.leading_dense_blocks
    if moe:
        used = max(1, shape.n_expert_used)
        ff = shape.expert_ff or shape.n_ff[layer]
        widths.append(used * (3 * ff + shape.n_embd) + 3 * ff * shape.n_expert_shared)
    elif shape.n_ff[layer]:
        widths.append(3 * shape.n_ff[layer])
    if shape.has_attention(layer):
        heads = shape.n_head[layer]
        if shape.is_mla:
            widths.append(
                heads * (shape.key_length_mla + shape.value_length_mla + 2 * shape.kv_lora_rank)
            )
        else:
            widths.append(
                heads * (shape.head_dim_k + shape.head_dim_v)
                + shape.n_head_kv[layer] * (shape.head_dim_k + shape.head_dim_v)
            )
    if shape.recurrent_layers and shape.recurrent_layers[layer]:
        if shape.ssm_inner:  # in_proj output, the convolution's input and output, y and z
            conv = shape.ssm_inner + 2 * shape.ssm_groups * shape.ssm_state
            widths.append(shape.ssm_inner + conv + shape.ssm_dt_rank + conv + 2 * shape.ssm_inner)
        else:
            widths.append(5 * shape.n_embd)  # short convolution: in_proj (3 wide), gate, out
    return max(widths, default=0)


def host_overhead(shape: ModelShape) -> int:
    """The llama-server process without the model: libraries, heap, and the vocabulary's
    maps (per token and per BPE merge), measured on the bundled build."""
    vocab = shape.n_vocab * PER_TOKEN + shape.n_merges * PER_MERGE
    return HOST_LIBRARIES + HOST_BASE_ANON + vocab
