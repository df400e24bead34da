"""Which settings to run a model with on this machine, from the memory free now.

Per model: whether it fits, the `-ngl` that fits a context, the largest context at full
offload, slots, KV cache type, `--cache-ram`, batch concurrency, and the curve of the largest
context per `-ngl`. Globally: how many models to keep warm and a `memory_budget_gb`.
Pure arithmetic over `estimate`: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from muxtui.engine.fit.estimate import MIB, PAD_CELLS, Estimate, FitParams, estimate
from muxtui.engine.fit.hardware import HardwareProfile
from muxtui.engine.fit.shape import ModelShape

GIB = 2**30
# Left free on each GPU: llama.cpp's own --fit target margin is 1 GiB per device. In RAM the
# same, or a tenth of it on a machine smaller than 10 GiB.
RESERVE_BYTES = GIB
KV_CHOICES = ("f16", "q8_0", "q4_0")
DEFAULT_CTX = 8192
# --cache-ram: room for one more full context per slot, within these bounds.
CACHE_RAM_MIN_MIB = 256
CACHE_RAM_MAX_MIB = 4096
# --ctx-checkpoints for models that need them (SWA, recurrent): llama-server keeps 32 per slot.
CHECKPOINTS = 8


@dataclass(frozen=True)
class CurvePoint:
    """The largest context (0: none) that fits with `ngl` layers on the GPU."""

    ngl: int
    max_ctx: int


@dataclass(frozen=True)
class Recommendation:
    """Settings for one model on this machine now."""

    fits: bool  # the wanted context fits, with the settings below
    params: FitParams
    estimate: Estimate
    wanted_ctx: int
    max_ctx: int  # largest context that fits at the recommended -ngl and KV type
    batch_concurrency: int  # requests a batch should keep in flight against this server
    reason: str
    curve: tuple[CurvePoint, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        """The recommended llama-server arguments."""
        return server_flags(self.params)


@dataclass(frozen=True)
class BudgetAdvice:
    """How many local servers to keep warm together, and the memory budget for them."""

    keep_warm: int
    memory_budget_gb: float
    reason: str


def host_need(result: Estimate) -> int:
    """System RAM a server can come to need: its estimate plus prompt cache and checkpoints,
    less the file pages it read once to repack (the kernel drops those under pressure)."""
    return result.host_needed


def gpu_needs(result: Estimate) -> dict[str, int]:
    """Bytes per GPU ("gpu0", ...)."""
    return {d.device: d.needed for d in result.devices if d.device != "cpu"}


def host_reserve(profile: HardwareProfile, reserve: int = RESERVE_BYTES) -> int:
    """RAM to leave free: `reserve`, or a tenth of RAM when that is less."""
    return min(reserve, profile.memory.usable_total // 10)


def fits(result: Estimate, profile: HardwareProfile, reserve: int = RESERVE_BYTES) -> bool:
    """Whether `result` fits in the memory free now, leaving a reserve on every device."""
    room = profile.memory.usable_available - host_reserve(profile, reserve)
    if profile.unified_memory:  # Apple: the GPU's share comes out of the same RAM
        return host_need(result) + sum(gpu_needs(result).values()) <= room
    if host_need(result) > room:
        return False
    free = {f"gpu{gpu.index}": gpu.memory_free for gpu in profile.gpus}
    return all(need <= free.get(name, 0) - reserve for name, need in gpu_needs(result).items())


def recommend(
    shape: ModelShape,
    profile: HardwareProfile,
    *,
    ctx: int | None = None,
    parallel: int | None = None,
    reserve: int = RESERVE_BYTES,
) -> Recommendation:
    """The settings to run `shape` with; `ctx` and `parallel` are what the person wants."""
    model_ctx = shape.context_length or DEFAULT_CTX
    wanted = min(ctx or min(model_ctx, DEFAULT_CTX), model_ctx)
    slots = parallel or default_slots(profile)
    gpus = len(profile.gpus)
    layers_all = shape.n_layer + 1
    base = FitParams(
        ctx=wanted,
        parallel=slots,
        kv_unified=slots > 1,
        ngl=-1 if gpus else 0,
        ctx_checkpoints=_checkpoints(shape),
    )

    def run(params: FitParams) -> Estimate:
        return _sized(shape, params, profile)

    chosen: Estimate | None = None
    # Full offload with an 8-bit cache beats splitting layers with a 16-bit one; a 4-bit
    # cache is the last resort.
    tries = [
        (ngl, kind) for ngl in _ngl_candidates(layers_all if gpus else 0) for kind in KV_CHOICES[:2]
    ]
    tries += [(ngl, KV_CHOICES[2]) for ngl in _ngl_candidates(layers_all if gpus else 0)]
    for ngl, kind in tries:
        result = run(replace(base, cache_type_k=kind, cache_type_v=kind, ngl=ngl))
        if fits(result, profile, reserve):
            chosen = result
            break
    curve = tuple(
        CurvePoint(ngl, max_context(shape, replace(base, ngl=ngl), profile, reserve))
        for ngl in _curve_points(layers_all if gpus else 0)
    )
    concurrency = slots
    if chosen is not None:
        params = chosen.params
        best = max_context(shape, params, profile, reserve)
        kind = params.cache_type_k
        where = "on the CPU" if not gpus else _ngl_words(params.ngl, layers_all)
        reason = f"{wanted} tokens fit with a {kind} KV cache {where}"
        return Recommendation(True, params, chosen, wanted, best, concurrency, reason, curve)
    fallback = run(base)
    best = max(point.max_ctx for point in curve) if curve else 0
    if best:
        ngl = max(curve, key=lambda point: point.max_ctx).ngl
        smaller = run(replace(base, ctx=best, ngl=ngl))
        reason = f"{wanted} tokens do not fit in the memory free now; {best} do"
        return Recommendation(False, smaller.params, smaller, wanted, best, 1, reason, curve)
    need = host_need(fallback) / GIB
    free = profile.memory.usable_available / GIB
    kept = host_reserve(profile, reserve) / GIB
    reason = (
        f"does not fit: needs {need:.1f} GiB of RAM and {kept:.1f} GiB stays free for the "
        f"system; {free:.1f} GiB is free now"
    )
    return Recommendation(False, fallback.params, fallback, wanted, 0, 1, reason, curve)


@dataclass(frozen=True)
class WhatIf:
    """A model's memory with the context, slots and KV cache type a person chose."""

    params: FitParams  # those settings, with the -ngl and --cache-ram that go with them
    estimate: Estimate
    fits: bool
    curve: tuple[CurvePoint, ...]  # the largest context per -ngl with these slots and KV type

    @property
    def flags(self) -> tuple[str, ...]:
        """These settings as llama-server arguments."""
        return server_flags(self.params)


def what_if(
    shape: ModelShape,
    profile: HardwareProfile,
    *,
    ctx: int,
    parallel: int,
    kv_type: str,
    reserve: int = RESERVE_BYTES,
) -> WhatIf:
    """The estimate for `ctx` tokens (at most the model's) over `parallel` slots with a
    `kv_type` cache, at the most GPU layers that fit (full offload when nothing fits)."""
    gpus = len(profile.gpus)
    layers_all = shape.n_layer + 1 if gpus else 0
    slots = max(1, parallel)
    base = FitParams(
        ctx=min(max(PAD_CELLS, ctx), shape.context_length or ctx),
        parallel=slots,
        kv_unified=slots > 1,
        cache_type_k=kv_type,
        cache_type_v=kv_type,
        ngl=-1 if gpus else 0,
        ctx_checkpoints=_checkpoints(shape),
    )
    chosen = None
    for ngl in _ngl_candidates(layers_all):
        result = _sized(shape, replace(base, ngl=ngl), profile)
        if fits(result, profile, reserve):
            chosen = result
            break
    shown = chosen or _sized(shape, base, profile)
    curve = tuple(
        CurvePoint(ngl, max_context(shape, replace(base, ngl=ngl), profile, reserve))
        for ngl in _curve_points(layers_all)
    )
    return WhatIf(shown.params, shown, chosen is not None, curve)


def server_flags(params: FitParams) -> tuple[str, ...]:
    """llama-server arguments for `params`, `--ctx-checkpoints` where it is not the default."""
    flags = list(params.flags())
    if params.ctx_checkpoints != FitParams().ctx_checkpoints:
        flags += ["--ctx-checkpoints", str(params.ctx_checkpoints)]
    return tuple(flags)


def default_slots(profile: HardwareProfile) -> int:
    """Slots worth running: GPUs batch well; a CPU only when it has cores to spare."""
    if profile.gpus:
        return 4
    cores = profile.cpu.physical_cores
    return 4 if cores >= 8 else 2 if cores >= 4 else 1


def cache_ram_for(result: Estimate) -> int:
    """--cache-ram in MiB: one more full context per slot, within sensible bounds."""
    kv = result.kv_cache // MIB
    return max(CACHE_RAM_MIN_MIB, min(CACHE_RAM_MAX_MIB, kv))


def max_context(
    shape: ModelShape, params: FitParams, profile: HardwareProfile, reserve: int = RESERVE_BYTES
) -> int:
    """The largest context (a multiple of 256, at most the model's) that fits with `params`."""
    top = max(PAD_CELLS, shape.context_length or DEFAULT_CTX)

    def ok(cells: int) -> bool:
        return fits(_sized(shape, replace(params, ctx=cells), profile), profile, reserve)

    if not ok(PAD_CELLS):
        return 0
    low, high = 1, top // PAD_CELLS  # in units of 256 cells; low always fits
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle * PAD_CELLS):
            low = middle
        else:
            high = middle - 1
    return low * PAD_CELLS


def plan_budget(
    recommendations: Sequence[Recommendation],
    profile: HardwareProfile,
    reserve: int = RESERVE_BYTES,
) -> BudgetAdvice:
    """How many of these models can stay warm together, smallest first, in RAM free now."""
    budget = max(0, profile.memory.usable_available - host_reserve(profile, reserve))
    needs = sorted(host_need(r.estimate) for r in recommendations if r.fits)
    total = count = 0
    for need in needs:
        if total + need > budget:
            break
        total += need
        count += 1
    gigabytes = int(budget / GIB * 2) / 2  # whole half-gigabytes, rounded down
    if not recommendations:
        reason = "no local models to weigh"
    elif count == 0:
        reason = "none of the local models fits in the memory free now"
    else:
        reason = f"{count} of {len(recommendations)} models fit together in {gigabytes:g} GB"
    return BudgetAdvice(max(1, count) if recommendations else 0, gigabytes, reason)


def _sized(shape: ModelShape, params: FitParams, profile: HardwareProfile) -> Estimate:
    """The estimate with `--cache-ram` sized for its own KV cache."""
    first = _estimate(shape, params, profile)
    return _estimate(shape, replace(params, cache_ram_mib=cache_ram_for(first)), profile)


def _checkpoints(shape: ModelShape) -> int:
    """--ctx-checkpoints: fewer for models that need them, llama-server's default otherwise."""
    return CHECKPOINTS if shape.has_swa or shape.has_recurrent else FitParams().ctx_checkpoints


def _estimate(shape: ModelShape, params: FitParams, profile: HardwareProfile) -> Estimate:
    return estimate(
        shape,
        params,
        gpus=len(profile.gpus) if params.ngl != 0 else 0,
        repacks=profile.cpu.repacks_on_load,
        repacks_q2k=profile.cpu.has("avx512f"),
    )


def _ngl_candidates(layers_all: int) -> list[int]:
    """-ngl values from all layers down to none (all = -1)."""
    if layers_all <= 0:
        return [0]
    return [-1, *range(layers_all - 1, -1, -1)]


def _curve_points(layers_all: int) -> list[int]:
    if layers_all <= 0:
        return [0]
    step = max(1, layers_all // 8)
    return sorted({0, layers_all, *range(0, layers_all, step)})


def _ngl_words(ngl: int, layers_all: int) -> str:
    if ngl < 0 or ngl >= layers_all:
        return "with every layer on the GPU"
    if ngl == 0:
        return "on the CPU"
    return f"with {ngl} of {layers_all} layers on the GPU"
