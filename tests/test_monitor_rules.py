"""The Monitor's pure parts on recorded data: alert rules over series, VRAM attribution from
(pid, bytes) lists as NVML reports them, ring buffers, and llama-server's own figures."""

from __future__ import annotations

import json
import math

import pytest

from muxtui.engine.monitor import alerts as rules
from muxtui.engine.monitor.alerts import GIB, MIB, AlertBook, StoppedServer
from muxtui.engine.monitor.gpu import attribute_vram, with_attribution
from muxtui.engine.monitor.samples import Alert, GpuSample
from muxtui.engine.monitor.series import Ring, capacity_for
from muxtui.engine.monitor.server_metrics import parse_prometheus, slots_figures

# --- recorded series ---------------------------------------------------------------------------

SECONDS = [float(t) for t in range(601)]  # ten minutes at 1 Hz
BASE = 1.1 * GIB
# An idle server leaking 0.5 MiB/s with allocator noise: 300 MiB in ten minutes.
LEAKING = [BASE + 0.5 * MIB * t + (0.3 * MIB if t % 7 == 0 else 0.0) for t in SECONDS]
# A steady server: the same noise, no trend.
STEADY = [BASE + (0.3 * MIB if t % 7 == 0 else 0.0) for t in SECONDS]
# One 300 MiB jump in the middle (a cache filled once), flat on both sides: not a leak.
STEP = [BASE + (300 * MIB if t >= 300 else 0.0) for t in SECONDS]


def test_least_squares_recovers_a_line() -> None:
    slope, r2 = rules.least_squares([0, 1, 2, 3], [10, 12, 14, 16])
    assert slope == pytest.approx(2.0)
    assert r2 == pytest.approx(1.0)
    assert rules.least_squares([0, 1], [5, 6]) == (0.0, 0.0)  # too few points
    assert rules.least_squares([1, 1, 1], [1, 2, 3]) == (0.0, 0.0)  # no time spread


def test_leak_rule_flags_a_steady_climb_while_idle() -> None:
    alert = rules.server_leak("gemma", SECONDS, LEAKING, 0.0, 600.0, 128 * MIB)
    assert alert is not None
    assert (alert.kind, alert.subject) == ("server-leak", "gemma")
    assert "gemma's memory grew 300 MiB in 10 min while idle" in alert.message
    assert "30 MiB/min" in alert.message
    assert "restart it" in alert.message


def test_leak_rule_ignores_a_steady_server_a_single_jump_and_small_trends() -> None:
    assert rules.server_leak("gemma", SECONDS, STEADY, 0.0, 600.0, 128 * MIB) is None
    assert rules.server_leak("gemma", SECONDS, STEP, 0.0, 600.0, 128 * MIB) is None
    # The same climb under a higher threshold is below it.
    assert rules.server_leak("gemma", SECONDS, LEAKING, 0.0, 600.0, 400 * MIB) is None


def test_leak_rule_needs_the_server_idle_for_most_of_the_window() -> None:
    # A request 3 minutes ago leaves 3 idle minutes of the 10: the rule waits. One at 100 s
    # leaves 500 idle seconds, more than the 80 % the fit needs.
    assert rules.server_leak("gemma", SECONDS, LEAKING, 420.0, 600.0, 128 * MIB) is None
    assert rules.server_leak("gemma", SECONDS, LEAKING, 100.0, 600.0, 128 * MIB) is not None
    assert rules.server_leak("gemma", [], [], 0.0, 600.0, 128 * MIB) is None


def test_swapping_rule_uses_the_ten_second_mean() -> None:
    times = [float(t) for t in range(30)]
    quiet = [0.0] * 30
    spike = [0.0] * 25 + [5e6] + [0.0] * 4  # one burst: 0.5 MB/s mean
    thrash = [0.0] * 20 + [4e6] * 10
    assert rules.swapping(times, quiet, 1e6, 10.0) is None
    assert rules.swapping(times, spike, 1e6, 10.0) is None
    alert = rules.swapping(times, thrash, 1e6, 10.0)
    assert alert is not None and alert.subject == "swap"
    assert "swapping in 4.0 MB/s" in alert.message and "unload a model" in alert.message
    assert rules.swapping([], [], 1e6, 10.0) is None


def test_memory_pressure_rule() -> None:
    assert rules.memory_pressure(32 * GIB, 8 * GIB, 10.0) is None
    alert = rules.memory_pressure(32 * GIB, int(1.5 * GIB), 10.0)
    assert alert is not None and alert.subject == "RAM"
    assert "only 1.5 GiB of 32.0 GiB available (5%)" in alert.message


def test_self_growth_rule_compares_with_the_baseline() -> None:
    assert rules.self_growth(350 * MIB, 0, 200 * MIB) is None  # no baseline yet
    assert rules.self_growth(250 * MIB, 100 * MIB, 200 * MIB) is None
    alert = rules.self_growth(350 * MIB, 100 * MIB, 200 * MIB)
    assert alert is not None and alert.subject == "muxtui"
    assert "grew 250 MiB since it started (100 MiB to 350 MiB)" in alert.message


STOP = StoppedServer("qwen", 0, stopped_at=100.0, used_before=int(20 * GIB), held=int(18 * GIB))
AFTER_STOP = [100.0 + t for t in range(16)]


def test_vram_not_returned_after_the_delay() -> None:
    kept = [19.8 * GIB] * 16  # the driver still holds almost all of it
    alert = rules.vram_not_returned(STOP, AFTER_STOP, kept, 10.0)
    assert alert is not None and alert.subject == "GPU 0"
    assert "qwen stopped 15 s ago but only 205 MiB of its 18.0 GiB VRAM came back" in (
        alert.message
    )
    assert "nvidia-smi" in alert.message


def test_vram_returned_or_not_yet_due_raises_nothing() -> None:
    returned = [20 * GIB] * 3 + [2.1 * GIB] * 13
    assert rules.vram_not_returned(STOP, AFTER_STOP, returned, 10.0) is None
    kept = [19.8 * GIB] * 5
    assert rules.vram_not_returned(STOP, AFTER_STOP[:5], kept, 10.0) is None  # too early
    small = StoppedServer("tiny", 0, 100.0, int(2 * GIB), 100 * MIB)
    assert rules.vram_not_returned(small, AFTER_STOP, [2 * GIB] * 16, 10.0) is None


GPU = GpuSample(
    index=1,
    name="RTX 3090",
    util_percent=99.0,
    memory_used=int(20 * GIB),
    memory_total=int(24 * GIB),
    temperature_c=86.0,
    power_w=345.0,
    power_limit_w=350.0,
    slowdown_temperature_c=90.0,
)


def test_gpu_temperature_and_power_near_their_limits() -> None:
    hot = rules.gpu_temperature(GPU, [85.0, 86.0, 87.0], 5.0)
    assert hot is not None and hot.subject == "GPU 1"
    assert "86 °C, 4 °C from its slowdown point (90 °C)" in hot.message
    assert rules.gpu_temperature(GPU, [70.0, 71.0], 5.0) is None
    power = rules.gpu_power(GPU, [340.0, 345.0, 350.0], 95.0)
    assert power is not None and "345 W of its 350 W limit (99%" in power.message
    assert rules.gpu_power(GPU, [200.0, 210.0], 95.0) is None
    no_limit = GpuSample(1, "x", None, 0, 1, None, 300.0)
    assert rules.gpu_power(no_limit, [300.0], 95.0) is None


def test_alert_book_keeps_when_each_alert_was_first_raised() -> None:
    book = AlertBook(baseline_after_s=30.0)
    swap = Alert("swapping", "swap", "m")
    first = book.stamp([swap], now=10.0)
    again = book.stamp([swap], now=11.0)
    assert first[0].since == 10.0 and again[0].since == 10.0
    book.stamp([], now=12.0)
    assert book.stamp([swap], now=13.0)[0].since == 13.0  # cleared, then raised anew
    book.note_rss(0.0, 90 * MIB)
    book.note_rss(29.0, 95 * MIB)
    assert book.baseline == 0
    book.note_rss(31.0, 100 * MIB)
    book.note_rss(40.0, 500 * MIB)
    assert book.baseline == 100 * MIB


# --- NVML attribution on recorded (pid, bytes) lists -------------------------------------------


def reading(used: int, processes: list[tuple[int, int]]) -> GpuSample:
    """A GPU as the reader returns it: figures and the driver's (pid, bytes) list."""
    return GpuSample(0, "RTX 3090", 50.0, used, 24 * GIB, 60.0, 200.0, processes=tuple(processes))


def test_vram_is_attributed_through_process_trees_and_the_rest_is_other() -> None:
    # As NVML listed them: qwen's server (pid 4100) runs its work in child 4101; gemma's is
    # 5200; 777 is a desktop compositor. The driver itself holds the remaining 0.5 GiB.
    recorded = [(4101, 17 * GIB), (5200, 2 * GIB), (777, GIB // 2)]
    trees = {"qwen": {4100, 4101}, "gemma": {5200, 5201}}
    by_model, other = attribute_vram(reading(20 * GIB, recorded), trees)
    assert by_model == (("gemma", 2 * GIB), ("qwen", 17 * GIB))
    assert other == 1 * GIB


def test_vram_attribution_with_no_models_or_no_processes() -> None:
    assert attribute_vram(reading(3 * GIB, [(777, GIB)]), {}) == ((), 3 * GIB)
    # Inside a container NVML may list host pids nobody here owns: all of it is "other".
    assert attribute_vram(reading(8 * GIB, [(99999, 8 * GIB)]), {"qwen": {10}}) == ((), 8 * GIB)
    # A process listed with more than "used" (drivers round differently): other is never < 0.
    assert attribute_vram(reading(GIB, [(10, 2 * GIB)]), {"qwen": {10}})[1] == 0


def test_gpu_sample_carries_the_attribution() -> None:
    sample = with_attribution(reading(10 * GIB, [(10, 6 * GIB)]), {"qwen": {10}})
    assert sample.vram_by_model == (("qwen", 6 * GIB),)
    assert sample.vram_other == 4 * GIB
    assert sample.processes == ((10, 6 * GIB),)


# --- ring buffers ------------------------------------------------------------------------------


def test_ring_is_bounded_and_reads_oldest_first_across_the_wrap() -> None:
    ring = Ring(5)
    for t in range(8):
        ring.append(float(t), float(t * 10))
    assert len(ring) == 5
    times, values = ring.window(since=-math.inf)
    assert times == (3.0, 4.0, 5.0, 6.0, 7.0)
    assert values == (30.0, 40.0, 50.0, 60.0, 70.0)
    assert ring.window(since=5.5) == ((6.0, 7.0), (60.0, 70.0))
    assert ring.last() == 70.0
    assert Ring(3).window(0.0) == ((), ())


def test_an_hour_fits_at_the_interval() -> None:
    assert capacity_for(1.0) == 3600
    assert capacity_for(0.5) == 7200
    assert capacity_for(30.0) == 120
    assert capacity_for(0.01) == 36_000  # bounded


# --- what llama-server says about itself --------------------------------------------------------

# Recorded from the bundled llama-server (build 10434) started with --metrics.
LLAMA_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 2
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 20
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 12.116
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
llamacpp:requests_deferred 0
"""

LLAMA_SLOTS = json.loads(
    '[{"id":0,"n_ctx":1024,"is_processing":false},'
    '{"id":1,"n_ctx":1024,"is_processing":true,"id_task":7,"n_prompt_tokens":200,'
    '"next_token":[{"has_next_token":true,"n_remain":-1,"n_decoded":56}]}]'
)


def test_prometheus_text_is_parsed() -> None:
    values = parse_prometheus(LLAMA_METRICS + 'labelled{model="a"} 3\nlabelled{model="b"} 4\n')
    assert values["llamacpp:tokens_predicted_total"] == 20
    assert values["llamacpp:requests_processing"] == 1
    assert values["llamacpp:predicted_tokens_seconds"] == pytest.approx(12.116)
    assert values["labelled"] == 3
    assert "llamacpp:kv_cache_usage_ratio" not in values  # this build no longer reports it


def test_slots_give_requests_the_context_share_in_use_and_tokens_generated() -> None:
    figures = slots_figures(LLAMA_SLOTS)
    assert figures is not None
    assert figures.busy == 1
    assert figures.kv_used == pytest.approx(256 / 2048)
    assert figures.decoded == {(1, 7): 56}
    assert slots_figures([]) is None
    assert slots_figures({"error": "slots disabled"}) is None


def test_ring_peaks_thin_a_window_keeping_the_highest_and_the_newest() -> None:
    ring = Ring(8)
    for t, value in enumerate([1, 9, 2, 3, 7, 4, 5, 6, 8, 0]):
        ring.append(float(t), float(value))
    # Holds t=2..9: values 2 3 7 4 5 6 8 0; groups of 3 counted back from the newest.
    assert ring.peaks(since=-math.inf, step=3) == (3.0, 7.0, 8.0)
    assert ring.peaks(since=-math.inf, step=1) == (2.0, 3.0, 7.0, 4.0, 5.0, 6.0, 8.0, 0.0)
    assert ring.peaks(since=7.0, step=2) == (6.0, 8.0)
    assert Ring(4).peaks(0.0, 3) == ()


def test_ring_windows_match_a_plain_list_at_every_wrap_position() -> None:
    import random

    rng = random.Random(3)
    for appended in range(0, 20):
        ring = Ring(7)
        points = [(float(t), float(rng.randint(0, 99))) for t in range(appended)]
        for t, value in points:
            ring.append(t, value)
        kept = points[-7:]
        for since in (-1.0, 5.0, 12.5, 30.0):
            inside = [v for t, v in kept if t >= since]
            assert ring.window(since) == (tuple(t for t, _ in kept if t >= since), tuple(inside))
            for step in (1, 2, 3, 5):
                ends = range(len(inside) % step or step, len(inside) + 1, step)
                expected = tuple(max(inside[max(end - step, 0) : end]) for end in ends)
                assert ring.peaks(since, step) == expected, (appended, since, step)
