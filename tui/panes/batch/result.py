"""A modal view of one batch record: the reply text on top, the whole record as JSON below."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static


def reply_text(record: dict[str, Any]) -> str:
    """The assistant's text of a result record, or the error message of an error record."""
    error = record.get("error")
    if isinstance(error, dict):
        return f"error ({error.get('code', '?')}): {error.get('message', '')}"
    try:
        content = record["response"]["body"]["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


class ResultScreen(ModalScreen[None]):
    """One record of the output or error file; Esc closes it."""

    DEFAULT_CSS = """
    ResultScreen { align: center middle; }
    ResultScreen #result { width: 90%; height: 85%; border: round $primary; padding: 0 1;
                           background: $surface; }
    ResultScreen #result-text { margin-bottom: 1; }
    ResultScreen #result-json { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", id="batch-result-close"),
    ]

    def __init__(self, custom_id: str, record: dict[str, Any]) -> None:
        super().__init__()
        self.custom_id = custom_id
        self.record = record

    def compose(self) -> ComposeResult:
        """The reply (or error) text, then the record."""
        with Vertical(id="result"):
            yield Label(f"{self.custom_id} · Esc closes")
            with VerticalScroll():
                yield Static(reply_text(self.record), id="result-text", markup=False)
                text = json.dumps(self.record, indent=2, ensure_ascii=False)
                yield Static(text, id="result-json", markup=False)
