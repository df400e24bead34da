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
    status: str = "complete"  # "complete", "stopped", "error", "truncated" or "streaming"
    stats: ChatStats | None = None
    error: str = ""
    finish_reason: str = ""  # the server's, for a complete reply ("length": max tokens reached)


def stats_line(stats: ChatStats, finish_reason: str = "") -> str:
    """The line under a reply: model, time to first token, rate, and the size of the reply.

    The size is in tokens only when the server counted them; otherwise it is the number of
    streamed chunks, and says so.
    """
    unit = "tokens" if stats.tokens_reported else "chunks"
    parts = [stats.model or stats.provider]
    if stats.ttft_s:
        parts.append(f"TTFT {stats.ttft_s:.2f} s")
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.1f} {'tok' if stats.tokens_reported else unit}/s")
    if stats.tokens_reported or stats.completion_tokens:  # a stored chunk count is not kept
        size = f"{stats.completion_tokens} {unit}"
        if stats.prompt_tokens:
            size += f" ({stats.prompt_tokens} in)"
        parts.append(size)
    if finish_reason == "length":
        parts.append("cut at max tokens")
    if stats.cached:
        parts.append("cached")
    return " · ".join(part for part in parts if part)


class MessageView(Vertical):
    """A user prompt or a model reply; replies stream in through `append` and end in `finish`.

    A reply made with `rendered=False` shows its text plain (cheap to mount and measure) until
    `render_markdown` is called, which the chat log does once the reply comes near the view.
    With `quick=True` as well, the plain text is Rich's rendering of the Markdown (one widget,
    no markup left showing, but slower to measure than plain text): for the replies in sight
    when a conversation opens, upgraded to the Markdown widget right after the first paint.
    """

    def __init__(
        self,
        message: ShownMessage,
        *,
        index: int = -1,
        rendered: bool = True,
        quick: bool = False,
    ) -> None:
        super().__init__(classes=f"message -{message.role}")
        self.message = message
        self.index = index  # the message's place in its conversation
        self.rendered = rendered or message.role == "user"
        self.quick = quick
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
            if self.rendered:
                yield Markdown(message.content, classes="message-body")
            elif self.quick:
                from rich.markdown import Markdown as RichMarkdown

                yield Static(RichMarkdown(message.content), classes="message-body -plain")
            else:
                yield Static(message.content, markup=False, classes="message-body -plain")
        # Shown (or hidden) from the start: the first layout of the view is its final one.
        footer = Static("", markup=False, classes="message-footer")
        self._show_footer(message.status, message.stats, message.error, footer)
        yield footer

    @property
    def body(self) -> Markdown:
        """The Markdown widget of a reply."""
        return self.query_one(".message-body", Markdown)

    async def render_markdown(self) -> None:
        """Replace the plain text of a reply with its Markdown rendering."""
        if self.rendered:
            return
        self.rendered = True
        plain = self.query_one(".message-body", Static)
        await self.mount(Markdown(self.text, classes="message-body"), before=plain)
        await plain.remove()

    def show_notice(self, notice: str) -> None:
        """Show a muted line above the reply (what the turn left out of the context)."""
        notices = self.query(".message-notice")
        if notices:
            notices.first(Static).update(notice)
        elif notice:
            self.mount(Static(notice, markup=False, classes="message-notice"), after=0)

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
        first = not self.text
        if first:
            self.query_one(".message-footer", Static).display = False
        self._pending.append(text)
        self.text += text
        if first:  # the first text shows at once; what follows is joined for a while
            self.call_later(self._flush)
        elif self._flush_timer is None:
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

    async def finish(self, message: ShownMessage) -> None:
        """End the stream and render the whole text once, so split code fences come out right."""
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        self._pending.clear()
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.text = message.content
        self.message = message
        await self.body.update(self.text)
        self._show_footer(message.status, message.stats, message.error)

    def _show_footer(
        self, status: str, stats: ChatStats | None, error: str, footer: Static | None = None
    ) -> None:
        footer = footer or self.query_one(".message-footer", Static)
        model = f"{self.message.model} · " if self.message.model else ""
        if status == "stopped":
            footer.set_classes("message-footer -stopped")
            footer.update(f"■ stopped · {model}the partial reply is kept")
        elif status == "truncated":
            footer.set_classes("message-footer -truncated")
            footer.update(f"✂ truncated · {model}the server ended the reply early; it is kept")
        elif status == "error":
            footer.set_classes("message-footer -error")
            footer.update(f"✗ {error}")
        elif status == "streaming":
            footer.set_classes("message-footer -status")
            footer.update("waiting for the first token…")
        elif stats is not None:
            footer.set_classes("message-footer -stats")
            footer.update(stats_line(stats, self.message.finish_reason))
        else:
            footer.set_classes("message-footer")
            footer.update("")
        footer.display = bool(status != "complete" or stats is not None)
