"""One message of a conversation: who said it, the text (Markdown for replies), and a footer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static

from muxtui.engine.events import ChatStats

if TYPE_CHECKING:
    from textual.timer import Timer
    from textual.widgets.markdown import MarkdownStream

# Seconds between writes of streamed text to the Markdown widget; deltas in between are joined.
FLUSH_EVERY_S = 0.08


@dataclass(frozen=True)
class ShownMessage:
    """What a message view shows: role, text, and how the reply ended."""

    role: str  # "user", "assistant" or "system"
    content: str
    model: str = ""
    status: str = "complete"  # "complete", "stopped", "error" or "streaming"
    stats: ChatStats | None = None
    error: str = ""


def stats_line(stats: ChatStats) -> str:
    """The line under a reply: model, time to first token, tokens per second, tokens."""
    parts = [stats.model or stats.provider]
    if stats.ttft_s:
        parts.append(f"TTFT {stats.ttft_s:.2f} s")
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.1f} tok/s")
    tokens = f"{stats.completion_tokens} tokens"
    if stats.prompt_tokens:
        tokens += f" ({stats.prompt_tokens} in)"
    parts.append(tokens)
    return " · ".join(part for part in parts if part)


class MessageView(Vertical):
    """A user prompt or a model reply; replies stream in through `append` and end in `finish`."""

    def __init__(self, message: ShownMessage) -> None:
        super().__init__(classes=f"message -{message.role}")
        self.message = message
        self._pending: list[str] = []
        self._stream: MarkdownStream | None = None
        self._flush_timer: Timer | None = None
        self.text = message.content

    def compose(self) -> ComposeResult:
        """A role line, the body, and a footer for stats, stop marks and errors."""
        message = self.message
        if message.role == "user":
            yield Static("You", classes="message-role")
            yield Static(message.content, markup=False, classes="message-body")
        else:
            yield Static(message.role.capitalize(), markup=False, classes="message-role")
            yield Markdown(message.content, classes="message-body")
        yield Static("", markup=False, classes="message-footer")

    def on_mount(self) -> None:
        """Show the footer that matches the message's status."""
        message = self.message
        self._show_footer(message.status, message.stats, message.error)

    @property
    def body(self) -> Markdown:
        """The Markdown widget of a reply."""
        return self.query_one(".message-body", Markdown)

    def show_status(self, status: str) -> None:
        """Show progress before the first token (e.g. a local server loading) in the footer."""
        footer = self.query_one(".message-footer", Static)
        footer.set_classes("message-footer -status")
        footer.update(status)
        footer.display = True

    def append(self, text: str) -> None:
        """Queue streamed reply text; it reaches the screen at the next flush."""
        if not text:
            return
        if not self._pending and not self.text:
            self.query_one(".message-footer", Static).display = False
        self._pending.append(text)
        self.text += text
        if self._flush_timer is None:
            self._flush_timer = self.set_timer(FLUSH_EVERY_S, self._flush)

    async def _flush(self) -> None:
        """Write the queued text to the Markdown stream in one piece."""
        self._flush_timer = None
        if not self._pending:
            return
        if self._stream is None:
            self._stream = Markdown.get_stream(self.body)
        fragment = "".join(self._pending)
        self._pending.clear()
        await self._stream.write(fragment)

    async def finish(
        self,
        status: str,
        *,
        text: str | None = None,
        stats: ChatStats | None = None,
        error: str = "",
    ) -> None:
        """End the stream and render the whole text once, so split code fences come out right."""
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        self._pending.clear()
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if text is not None:
            self.text = text
        self.message = ShownMessage(
            self.message.role, self.text, self.message.model, status, stats, error
        )
        await self.body.update(self.text)
        self._show_footer(status, stats, error)

    def _show_footer(self, status: str, stats: ChatStats | None, error: str) -> None:
        footer = self.query_one(".message-footer", Static)
        if status == "stopped":
            footer.set_classes("message-footer -stopped")
            model = f"{self.message.model} · " if self.message.model else ""
            footer.update(f"■ stopped · {model}the partial reply is kept")
        elif status == "error":
            footer.set_classes("message-footer -error")
            footer.update(f"✗ {error}")
        elif status == "streaming":
            footer.set_classes("message-footer -status")
            footer.update("waiting for the first token…")
        elif stats is not None:
            footer.set_classes("message-footer -stats")
            footer.update(stats_line(stats))
        else:
            footer.set_classes("message-footer")
            footer.update("")
        footer.display = bool(status != "complete" or stats is not None)
