"""Pilot tests of the Hardware pane, hosted in a small app with a real engine: the detected
hardware and a row for the real Gemma, the what-if, applying its flags to the config (and the
one-line error when the file is broken), and one snapshot from a fixed machine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Static

from muxtui.engine.config import Config, load_config
from muxtui.engine.core import Engine
from muxtui.engine.fit.apply import replace_flags
from muxtui.engine.fit.estimate import FitParams
from muxtui.engine.fit.hardware import CpuInfo, HardwareProfile, MemoryInfo, detect_hardware
from muxtui.engine.fit.measure import FitRecord, FitStore, Measured
from muxtui.engine.fit.recommend import GIB, plan_budget
from muxtui.engine.fit.report import FitReport, LocalModel, analyse_model
from muxtui.engine.paths import Paths
from muxtui.tui.panes.hardware.pane import HardwarePane
from muxtui.tui.panes.hardware.text import MODEL_COLUMNS, size
from tests.fit_shapes import write_shape
from tests.llama_support import assembled_gemma
from tests.test_fit_recommend import RTX_3090

COLUMN = {key: index for index, (key, _) in enumerate(MODEL_COLUMNS)}
GEMMA_CMD = "llama-server -m {path} --port {port} -c 2048 -ngl 99"


class PaneApp(App[None]):
    """Just the Hardware pane, as the pane registry will mount it."""

    AUTO_FOCUS = "#hw-models"

    def __init__(self, engine: Engine, report: FitReport | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.report = report

    def compose(self) -> ComposeResult:
        yield HardwarePane(self.engine, report=self.report, id="hardware")


async def wait_for(pilot: Pilot[None], done: Callable[[], bool], what: str) -> None:
    """Let the app run until `done()` holds (bounded by count)."""
    for _ in range(600):
        if done():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never: {what}")


def cell(app: PaneApp, name: str, column: str) -> str:
    return str(app.query_one("#hw-models", DataTable).get_row(name)[COLUMN[column]])


def text_of(widget: Static) -> str:
    return str(widget.render())


@pytest.fixture
def gemma_config(tmp_path_factory: pytest.TempPathFactory, paths: Paths) -> Path:
    gemma = assembled_gemma(tmp_path_factory)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(
        "# hand-written\n"
        "[local.gemma]  # the tiny one\n"
        f"cmd = '{GEMMA_CMD}'\n"
        f'path = "{gemma}"\n'
        "ttl = 0\n\n"
        "[cache]\nmax_models = 1  # keep it small\n",
        encoding="utf-8",
    )
    return paths.config_file


@pytest.fixture
async def engine(gemma_config: Path, paths: Paths) -> AsyncIterator[Engine]:
    made = Engine(load_config(gemma_config), paths, discover=False)
    yield made
    await made.aclose()


async def loaded(pilot: Pilot[None]) -> HardwarePane:
    pane = pilot.app.query_one(HardwarePane)
    await wait_for(pilot, lambda: pane.what_if_shown is not None, "the report and a what-if")
    await pilot.pause()
    return pane


async def test_the_pane_shows_the_hardware_and_the_real_gemma(
    engine: Engine, gemma_config: Path
) -> None:
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await loaded(pilot)
        labels = [str(label.render()) for label in app.query(".fact-label").results(Label)]
        facts = [text_of(fact) for fact in app.query(".fact").results(Static)]
        assert labels[:3] == ["CPU", "ISA", "RAM"]
        machine = detect_hardware()
        assert facts[0].startswith(f"{machine.cpu.model} · {machine.cpu.physical_cores} cores")
        assert f"of {size(machine.memory.total)}" in facts[2]
        if machine.gpus:
            assert labels[3] == "GPU 0" and machine.gpus[0].name in facts[3]
        else:
            assert labels[3] == "GPU" and facts[3] == f"none ({machine.gpu_status})"

        gemma = Path(load_config(gemma_config).local["gemma"].path)
        assert pane.selected == "gemma"
        assert cell(app, "gemma", "arch") == "gemma3"
        assert cell(app, "gemma", "file") == size(os.path.getsize(gemma))
        assert cell(app, "gemma", "fits") in ("yes", "no")
        assert cell(app, "gemma", "ctx") == "2048"  # the context it is configured with
        if not machine.gpus:
            assert cell(app, "gemma", "ngl") == "0"
        assert cell(app, "gemma", "estimate").endswith("MiB")


async def test_the_what_if_follows_the_context_and_applying_writes_the_flags(
    engine: Engine, gemma_config: Path
) -> None:
    original = gemma_config.read_text(encoding="utf-8")
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await loaded(pilot)
        before = pane.what_if_shown
        assert before is not None and before.result.params.ctx == 2048
        devices = app.query_one("#whatif-devices", DataTable)
        kv_before = str(devices.get_row_at(0)[2])

        app.query_one("#whatif-ctx", Input).focus()  # the old value is selected: typing replaces
        await pilot.press(*"8192")
        await wait_for(
            pilot,
            lambda: pane.what_if_shown is not None and pane.what_if_shown.result.params.ctx == 8192,
            "the what-if for 8192 tokens",
        )
        after = pane.what_if_shown
        assert after is not None
        assert after.result.estimate.kv_cache > before.result.estimate.kv_cache
        assert str(devices.get_row_at(0)[2]) != kv_before
        verdict = text_of(app.query_one("#whatif-verdict", Static))
        assert "flags -c 8192 " in verdict

        app.query_one("#hw-models", DataTable).focus()
        await pilot.press("a")
        status = app.query_one("#hw-status", Static)
        await wait_for(pilot, lambda: status.has_class("-applied"), "the flags written")
        assert "[local.gemma]" in text_of(status) and "-c 8192" in text_of(status)
        flags = after.result.flags
        assert gemma_config.read_text(encoding="utf-8") == original.replace(
            GEMMA_CMD, replace_flags(GEMMA_CMD, flags)
        )
        assert load_config(gemma_config).local["gemma"].cmd.endswith(" ".join(flags))
        assert oct(gemma_config.stat().st_mode & 0o777) == "0o600"
        # the row is weighed again with the written flags
        await wait_for(pilot, lambda: cell(app, "gemma", "ctx") == "8192", "the row again")

        broken = "[local.gemma\ncmd = 'x'\n"
        gemma_config.write_text(broken, encoding="utf-8")
        await pilot.click("#whatif-apply")
        await wait_for(pilot, lambda: status.has_class("-error"), "the error line")
        line = text_of(status)
        assert "\n" not in line and "not valid TOML" in line and str(gemma_config) in line
        assert gemma_config.read_text(encoding="utf-8") == broken


async def test_a_bad_number_in_the_what_if_is_named_and_nothing_is_weighed(
    engine: Engine,
) -> None:
    app = PaneApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await loaded(pilot)
        shown = pane.what_if_shown
        app.query_one("#whatif-slots", Input).focus()
        await pilot.press("0")
        await pilot.pause()
        await app.workers.wait_for_complete()
        verdict = text_of(app.query_one("#whatif-verdict", Static))
        assert verdict == "slots: 1 to 256"
        assert pane.what_if_shown is shown


# --- snapshot --------------------------------------------------------------------------------

FIXED_MACHINE = HardwareProfile(
    CpuInfo(
        "AMD Ryzen 9 7950X 16-Core Processor",
        16,
        32,
        "x86_64",
        ("avx", "avx2", "f16c", "fma", "avx512f", "avx512bw", "avx512_vnni"),
    ),
    MemoryInfo(total=64 * GIB, available=48 * GIB, cgroup_limit=40 * GIB, cgroup_usage=2 * GIB),
    (RTX_3090,),
)


def fixed_report(tmp_path: Path) -> FitReport:
    """A report for a fixed machine: a MoE model with a measurement, and a missing file."""
    model_file = write_shape("moe", tmp_path / "moe.gguf", scale=4)
    store = FitStore(tmp_path / "fit.sqlite3")
    cmd = "llama-server -m {path} --port {port} -c 8192 -np 2"
    moe, _ = analyse_model(LocalModel("moe", str(model_file), cmd, ""), FIXED_MACHINE, store)
    assert moe.configured is not None
    measured = FitRecord(
        str(model_file),
        moe.file_bytes,
        "first_request",
        FitParams(ctx=8192, parallel=2),
        moe.configured.host.total,
        None,
        Measured(
            rss=int(moe.configured.host.total / 1.04),
            anon=0,
            file=0,
            vram=int(moe.configured.device("gpu0").total * 0.97),
        ),
    )
    moe = replace(moe, measured=measured)
    missing = LocalModel("qwen3-30b", "/models/qwen3-30b.gguf", "", "[local.qwen3-30b].path")
    absent, problems = analyse_model(missing, FIXED_MACHINE, store)
    assert moe.recommendation is not None
    return FitReport(
        hardware=FIXED_MACHINE,
        models=(moe, absent),
        budget=plan_budget([moe.recommendation], FIXED_MACHINE),
        problems=tuple(problems),
    )


def test_hardware_pane_snapshot(
    snap_compare: Callable[..., bool], paths: Paths, tmp_path: Path
) -> None:
    engine = Engine(Config(), paths, discover=False)
    app = PaneApp(engine, fixed_report(tmp_path))

    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
    finally:
        import asyncio

        asyncio.run(engine.aclose())
