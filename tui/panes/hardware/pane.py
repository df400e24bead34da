"""The Hardware pane: what this machine has, which local models fit with which flags (the
estimate beside what was measured), a what-if for the selected model, and applying its flags
to the config.

The report is weighed by the engine in a worker the first time the pane is shown (never
before, never on the UI's time) and again on `r`; the what-if is recomputed in a worker as
its settings change. Workers set the pane's own reactives; watchers paint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.events import Resize
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Label, Static

from muxtui.tui.display import describe, shorten_home
from muxtui.tui.panes.hardware.text import MODEL_COLUMNS, detected, model_row, problem_lines
from muxtui.tui.panes.hardware.what_if_form import WhatIfForm, WhatIfShown

if TYPE_CHECKING:
    from textual.worker import Worker

    from muxtui.engine.core import Engine
    from muxtui.engine.fit.report import FitReport, ModelFit

NARROW_BELOW = 110  # columns: below this the what-if's two tables stack
LOADING = "Detecting the hardware and weighing the local models…"
NO_MODELS = (
    "No local models found: put GGUF files in ~/models (or a [cache] model_dirs folder), "
    "or add a [local.NAME] entry with its path to the config, then press r."
)


class HardwarePane(Widget):
    """Detected hardware, a row per local model, the what-if and applying its flags."""

    DEFAULT_CSS = """
    HardwarePane { height: 1fr; }
    HardwarePane #hw-scroll { height: 1fr; }
    HardwarePane #hw-detected {
        grid-size: 2; grid-columns: 10 1fr; grid-rows: auto; height: auto; padding: 0 1;
    }
    HardwarePane #hw-detected .fact-label { text-style: bold; }
    HardwarePane #hw-loading { column-span: 2; }
    HardwarePane .section-title { padding: 1 1 0 1; text-style: bold; }
    HardwarePane #hw-models { height: auto; max-height: 12; margin: 0 1; }
    HardwarePane #hw-problems { padding: 0 1; height: auto; }
    HardwarePane WhatIfForm { height: auto; }
    HardwarePane #whatif-inputs { height: 1; margin: 1 1 0 1; }
    HardwarePane .field-label { padding: 0 1 0 0; color: $text-muted; }
    HardwarePane #whatif-ctx { width: 10; margin-right: 2; }
    HardwarePane #whatif-slots { width: 5; margin-right: 2; }
    HardwarePane #whatif-kv { width: 10; margin-right: 2; }
    HardwarePane #whatif-verdict { padding: 1 1 0 1; height: auto; }
    HardwarePane #whatif-apply { margin-left: 1; }
    HardwarePane #whatif-tables { height: auto; margin: 1 1 0 1; }
    HardwarePane #whatif-devices { width: 1fr; height: auto; }
    HardwarePane #whatif-curve { width: 26; height: auto; margin-left: 2; }
    HardwarePane.-narrow #whatif-tables { layout: vertical; }
    HardwarePane.-narrow #whatif-curve { width: auto; margin: 1 0 0 0; }
    HardwarePane #hw-status { padding: 0 1; height: auto; color: $text-muted; }
    HardwarePane #hw-status.-applied { color: $success; }
    HardwarePane #hw-status.-error { color: $error; }
    HardwarePane #hw-hint { padding: 1 1 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "refresh_report",
            "Refresh",
            id="refresh-fit",
            tooltip="Detect the hardware and weigh the local models again",
        ),
        Binding(
            "a",
            "apply_flags",
            "Apply flags",
            id="apply-flags",
            tooltip="Write the what-if's flags into the selected model's [local] entry",
        ),
    ]

    report: reactive[FitReport | None] = reactive(None, always_update=True)

    def __init__(
        self, engine: Engine, *, report: FitReport | None = None, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.engine = engine
        self._injected = report  # a report given up front (tests) is shown without weighing
        self._loader: Worker[None] | None = None
        self.selected = ""  # the model the what-if is about
        self.what_if_shown: WhatIfShown | None = None

    def compose(self) -> ComposeResult:
        """Hardware, models, problems, the what-if, the result line and the keys."""
        with VerticalScroll(id="hw-scroll"):
            with Grid(id="hw-detected"):
                yield Static(LOADING, id="hw-loading")
            yield Label("Local models", classes="section-title")
            yield DataTable(id="hw-models", cursor_type="row", zebra_stripes=True)
            yield Static("", id="hw-problems", markup=False)
            yield WhatIfForm()
            yield Static("", id="hw-status", markup=False)
            yield Label(
                "r refresh · a apply the flags to the model's [local] entry · Tab moves to the "
                "context, slots and KV cache fields",
                id="hw-hint",
                markup=False,
            )

    def on_mount(self) -> None:
        """The models table's columns; an injected report is shown at once."""
        table = self.query_one("#hw-models", DataTable)
        for key, label in MODEL_COLUMNS:
            table.add_column(label, key=key)
        self.query_one("#hw-problems").display = False
        if self._injected is not None:
            self.report = self._injected

    def on_show(self) -> None:
        """Weigh the models the first time the pane is shown."""
        if self.report is None and self._loader is None:
            self.action_refresh_report()

    def on_resize(self, event: Resize) -> None:
        """Stack the what-if's tables on a narrow terminal."""
        self.set_class(event.size.width < NARROW_BELOW, "-narrow")

    # --- the report ----------------------------------------------------------------------------

    def action_refresh_report(self) -> None:
        """Detect the hardware and weigh every local model again (in a worker)."""
        if self.report is not None:
            self._status("Weighing the models again…")
        self._reload()

    def _reload(self) -> None:
        self._loader = self.run_worker(
            self._load(), group="hardware-report", exclusive=True, exit_on_error=False
        )

    async def _load(self) -> None:
        try:
            report = await self.engine.fit_report()
        except Exception as exc:  # whatever failed, say so in the pane rather than nothing
            self._status(f"Could not weigh the models: {describe(exc)}", "-error")
            for loading in self.query("#hw-loading").results(Static):
                loading.update("Nothing detected yet: r tries again.")
            return
        if not self.query_one("#hw-status", Static).has_class("-applied"):
            self._status("")  # the line saying what was written stays
        self.report = report

    async def watch_report(self, report: FitReport | None) -> None:
        """Paint the hardware, the model rows and the problems; keep the selection."""
        if report is None:
            return
        facts = self.query_one("#hw-detected", Grid)
        with self.app.batch_update():
            await facts.remove_children()
            await facts.mount_all(
                widget
                for label, value in detected(report.hardware, report.budget)
                for widget in (
                    Label(label, classes="fact-label", markup=False),
                    Static(value, classes="fact", markup=False),
                )
            )
        problems = self.query_one("#hw-problems", Static)
        problems.update(problem_lines(report.problems) if report.models else NO_MODELS)
        problems.display = bool(report.problems) or not report.models
        names = [model.name for model in report.models]
        weighed = [model.name for model in report.models if model.shape is not None]
        first = weighed[0] if weighed else (names[0] if names else "")
        name = self.selected if self.selected in names else first
        table = self.query_one("#hw-models", DataTable)
        with self.prevent(DataTable.RowHighlighted):  # the rows come back, the choice stays
            table.clear()
            for model in report.models:
                table.add_row(*model_row(model), key=model.name)
            if name:
                table.move_cursor(row=names.index(name))
        if name == self.selected and self.what_if_shown is not None:
            self.query_one(WhatIfForm).weigh_again()  # the person's settings stay
        else:
            self._select(name, force=True)

    @on(DataTable.RowHighlighted, "#hw-models")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._select(str(event.row_key.value or ""))

    def _model(self, name: str) -> ModelFit | None:
        if self.report is None:
            return None
        return next((model for model in self.report.models if model.name == name), None)

    def _select(self, name: str, *, force: bool = False) -> None:
        """Point the what-if at `name`, starting from its recommendation."""
        if name == self.selected and not force:
            return
        self.selected = name
        form = self.query_one(WhatIfForm)
        model = self._model(name)
        if model is None or model.shape is None or model.recommendation is None:
            self.what_if_shown = None
            form.shown = None
            return
        params = model.recommendation.params
        form.load(name, params.ctx, params.slots, params.cache_type_k, model.shape.context_length)

    # --- the what-if ---------------------------------------------------------------------------

    @on(WhatIfForm.Edited)
    def _settings_edited(self, event: WhatIfForm.Edited) -> None:
        model = self._model(self.selected)
        if event.error:
            self.query_one(WhatIfForm).show_error(event.error)
            return
        if model is None or model.shape is None or self.report is None:
            return
        self.run_worker(
            self._weigh(model, event.ctx, event.slots, event.kv_type),
            group="hardware-whatif",
            exclusive=True,
            exit_on_error=False,
        )

    async def _weigh(self, model: ModelFit, ctx: int, slots: int, kv_type: str) -> None:
        assert model.shape is not None and self.report is not None
        hardware = self.report.hardware
        result = await self.engine.what_if(
            model.shape, hardware, ctx=ctx, parallel=slots, kv_type=kv_type
        )
        if model.name != self.selected:
            return  # another model was selected meanwhile
        shown = WhatIfShown(model.name, model.shape.n_layer + 1, hardware, result)
        self.what_if_shown = shown
        self.query_one(WhatIfForm).shown = shown

    # --- applying ------------------------------------------------------------------------------

    @on(WhatIfForm.ApplyPressed)
    def _apply_pressed(self) -> None:
        self.action_apply_flags()

    def action_apply_flags(self) -> None:
        """Write the what-if's flags into the selected model's `[local]` entry (in a worker)."""
        shown = self.what_if_shown
        if shown is None or shown.model != self.selected:
            self._status("Select a model with a readable GGUF file first.", "-error")
            return
        self.run_worker(
            self._apply(shown.model, shown.result.flags),
            group="hardware-apply",
            exclusive=True,
            exit_on_error=False,
        )

    async def _apply(self, name: str, flags: tuple[str, ...]) -> None:
        from muxtui.engine.errors import MuxtuiError

        try:
            applied = await self.engine.apply_recommendation(name, flags)
        except MuxtuiError as exc:
            self._status(f"✗ {exc}", "-error")
            return
        where = shorten_home(applied.config_file)
        what = "added" if applied.created else "wrote its flags into"
        self._status(
            f"✓ {what} [local.{name}] in {where}: {' '.join(flags)} "
            f"(used the next time {name} starts)",
            "-applied",
        )
        self._reload()  # the row now shows the model as configured

    def _status(self, text: str, kind: str = "") -> None:
        status = self.query_one("#hw-status", Static)
        status.update(text)
        status.set_classes(kind)
