"""The what-if for one model: context, slots and KV cache type to edit; the estimate per device,
the largest context per `-ngl`, and the flags that `a` writes into the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from muxtui.engine.fit.recommend import KV_CHOICES
from muxtui.tui.panes.hardware.text import DEVICE_COLUMNS, device_rows, ngl_label

if TYPE_CHECKING:
    from muxtui.engine.fit.hardware import HardwareProfile
    from muxtui.engine.fit.recommend import WhatIf

MAX_SLOTS = 256
MIN_CTX = 256


@dataclass(frozen=True)
class WhatIfShown:
    """A what-if result for one model on one machine (what the form paints)."""

    model: str
    layers_all: int  # the model's layers plus the output layer
    hardware: HardwareProfile
    result: WhatIf


class WhatIfForm(Vertical):
    """Inputs for one model's settings above their estimate; posts Edited as they change."""

    shown: reactive[WhatIfShown | None] = reactive(None, always_update=True)

    class Edited(Message):
        """The person changed a setting; `error` says why the values cannot be used yet."""

        def __init__(self, ctx: int, slots: int, kv_type: str, error: str = "") -> None:
            super().__init__()
            self.ctx = ctx
            self.slots = slots
            self.kv_type = kv_type
            self.error = error

    class ApplyPressed(Message):
        """The person asked for the flags to be written into the config."""

    def compose(self) -> ComposeResult:
        """Title, the three settings and the apply button, the tables, the flags."""
        yield Label("What-if", id="whatif-title", classes="section-title", markup=False)
        with Horizontal(id="whatif-inputs"):
            yield Label("context", classes="field-label")
            yield Input(id="whatif-ctx", type="integer", compact=True, max_length=8)
            yield Label("slots", classes="field-label")
            yield Input(id="whatif-slots", type="integer", compact=True, max_length=3)
            yield Label("KV cache", classes="field-label")
            yield Select(
                [(kind, kind) for kind in KV_CHOICES],
                id="whatif-kv",
                allow_blank=False,
                value=KV_CHOICES[0],
                compact=True,
            )
            yield Button("Apply to config", id="whatif-apply", compact=True)
        with Horizontal(id="whatif-tables"):
            yield DataTable(id="whatif-devices", cursor_type="none", zebra_stripes=True)
            yield DataTable(id="whatif-curve", cursor_type="none", zebra_stripes=True)
        yield Static("", id="whatif-verdict")

    def on_mount(self) -> None:
        """Columns of both tables."""
        self.query_one("#whatif-devices", DataTable).add_columns(*DEVICE_COLUMNS)
        self.query_one("#whatif-curve", DataTable).add_columns("-ngl", "max context")

    def load(self, model: str, ctx: int, slots: int, kv_type: str, max_ctx: int) -> None:
        """Show `model` with these starting settings (its recommendation)."""
        title = f"What-if · {model}" + (f" · up to {max_ctx} tokens" if max_ctx else "")
        self.query_one("#whatif-title", Label).update(title)
        with self.prevent(Input.Changed, Select.Changed):
            self.query_one("#whatif-ctx", Input).value = str(ctx)
            self.query_one("#whatif-slots", Input).value = str(slots)
            self.query_one("#whatif-kv", Select).value = kv_type if kv_type in KV_CHOICES else "f16"
        self._post_edited()

    @property
    def kv_type(self) -> str:
        """The KV cache type chosen."""
        return str(self.query_one("#whatif-kv", Select).value)

    @on(Input.Changed, "#whatif-ctx, #whatif-slots")
    @on(Select.Changed, "#whatif-kv")
    def _edited(self, event: Message) -> None:
        event.stop()
        self._post_edited()

    def weigh_again(self) -> None:
        """Ask for the current settings to be weighed again (the report changed)."""
        self._post_edited()

    def _post_edited(self) -> None:
        ctx_text = self.query_one("#whatif-ctx", Input).value.strip()
        slots_text = self.query_one("#whatif-slots", Input).value.strip()
        ctx = int(ctx_text) if ctx_text.isdigit() else 0
        slots = int(slots_text) if slots_text.isdigit() else 0
        error = ""
        if ctx < MIN_CTX:
            error = f"context: {MIN_CTX} tokens or more"
        elif not 1 <= slots <= MAX_SLOTS:
            error = f"slots: 1 to {MAX_SLOTS}"
        self.post_message(self.Edited(ctx, slots, self.kv_type, error))

    @on(Button.Pressed, "#whatif-apply")
    def _apply_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.ApplyPressed())

    def show_error(self, error: str) -> None:
        """Say why the settings cannot be weighed (a bad number), keeping the last figures."""
        self.query_one("#whatif-verdict", Static).update(Text(error, style="bold red"))

    def watch_shown(self, shown: WhatIfShown | None) -> None:
        """Paint a result: the devices, the curve, whether it fits and the flags."""
        devices = self.query_one("#whatif-devices", DataTable)
        curve = self.query_one("#whatif-curve", DataTable)
        verdict = self.query_one("#whatif-verdict", Static)
        devices.clear()
        curve.clear()
        if shown is None:
            verdict.update("Select a model with a readable GGUF file to weigh its settings.")
            return
        result = shown.result
        for row in device_rows(result, shown.hardware):
            devices.add_row(*row)
        for point in result.curve:
            curve.add_row(ngl_label(point.ngl, shown.layers_all), str(point.max_ctx or "none"))
        line = Text()
        if result.fits:
            line.append("✓ fits now", style="bold green")
        else:
            line.append("✗ does not fit now", style="bold red")
        if shown.hardware.gpus:
            line.append(f" at -ngl {ngl_label(result.params.ngl, shown.layers_all)}")
        line.append("   flags ", style="bold")
        line.append(" ".join(result.flags))
        verdict.update(line)
