"""The scrolling log of one conversation: every message kept as data, a window of them mounted.

Opening a conversation mounts its newest message first, then older ones a few at a time while
less than a screenful of them lies above the view; scrolling near either edge of what is
mounted brings in the next messages, and views far from the view are released. Replies come in
as plain text and get their Markdown once they near the view. `AnchoredScroll` keeps the view
in place while all this happens above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Static

from muxtui.tui.memory import ReleasedViews
from muxtui.tui.widgets.anchored_scroll import AnchoredScroll

if TYPE_CHECKING:
    from textual.geometry import Region
    from textual.widget import Widget

    from muxtui.engine.events import StoredMessage
    from muxtui.tui.panes.chat.message_view import MessageView, ShownMessage

# At most this many message views stay mounted; beyond it, those farthest from the view go.
MOUNTED_AT_MOST = 48
# Messages mounted in one step when the view nears an edge of what is mounted: plain ones
# cost about a millisecond each, rendered ones (while the view is still unfilled) far more.
BATCH = 6
RENDERED_BATCH = 2
# Mounted content kept beyond each edge of the view, in screen heights, and how far from the
# view a message must be before it is released.
KEEP_SCREENS = 1
RELEASE_SCREENS = 2
# Seconds of Markdown rendering per step before the loop gets to handle keys again.
RENDER_BUDGET_S = 0.03
# Messages mounted at once when a conversation opens: its newest, in Rich's quick rendering of
# its Markdown (the Markdown widget follows right after the first paint, as do the messages
# before it: every widget mounted before that paint delays it by a few milliseconds).
OPENING_BATCH = 1


def _message_view_class() -> type[MessageView]:
    # Imported on first use: Markdown pulls in markdown-it (~70 ms), which the first frame of
    # an empty chat does not need. The app warms this import up after the first frame.
    from muxtui.tui.panes.chat.message_view import MessageView

    return MessageView


def shown(message: StoredMessage) -> ShownMessage:
    """How a stored message is displayed."""
    from muxtui.tui.panes.chat.message_view import ShownMessage

    return ShownMessage(
        message.role,
        message.content,
        message.model,
        message.status,
        message.stats,
        message.error,
        message.finish_reason,
    )


class ChatLog(AnchoredScroll):
    """The messages of one conversation; follows new text only while scrolled to the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home,ctrl+home", "go_first", "First", id="log-first", show=False),
        Binding("end,ctrl+end", "go_last", "Last", id="log-last", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.messages: list[ShownMessage] = []  # the whole conversation, oldest first
        self.first = 0  # index of the first mounted message
        self.end = 0  # one past the last mounted message
        self.live: MessageView | None = None  # the reply streaming now
        self.hints = ("PgUp scrolls, Ctrl+Home goes to the first", "Ctrl+End goes to the newest")
        self._pending_lines = 0  # scrolling asked for beyond what is mounted yet
        self._lock = asyncio.Lock()  # one change to the window at a time
        self._step_scheduled = False
        self._awaiting_layout = False  # changed since the last layout: regions are stale
        self._released = ReleasedViews(self, lambda: self.is_settled)

    @property
    def message_views(self) -> list[MessageView]:
        """The mounted message views, oldest first."""
        view_class = _message_view_class()
        return [child for child in self.children if isinstance(child, view_class)]

    @property
    def is_settled(self) -> bool:
        """Whether the window has nothing left to mount, render or release for now."""
        if not self.display and not self.messages:
            return True  # an empty chat shows its guide instead: nothing to lay out
        busy = self._step_scheduled or self._lock.locked() or self._awaiting_layout
        return not (busy or self._pending_lines)

    def can_follow(self) -> bool:
        """Reaching the bottom follows new text only when the newest message is mounted."""
        return self.end == len(self.messages)

    def can_anchor(self, widget: Widget) -> bool:
        """Messages are kept in place; the notes above and below them move with the window."""
        return isinstance(widget, _message_view_class())

    def layout_changed(self) -> None:
        """What is mounted, or a height, changed: the window may need upkeep."""
        self._awaiting_layout = False
        self._schedule()

    def _changed(self) -> None:
        """Views were mounted, removed or re-rendered: wait for their layout before measuring."""
        self._awaiting_layout = True

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """Hold the window for one change; upkeep follows it."""
        async with self._lock:
            yield
        self._schedule()

    # --- showing a window --------------------------------------------------------------------

    async def show_messages(self, messages: Sequence[ShownMessage]) -> None:
        """Show a conversation from its newest message; older ones follow a few at a time."""
        async with self._changing():
            await self._show_newest(messages)

    async def show_last(self) -> None:
        """Go to the newest message (a new window if it is not mounted)."""
        async with self._changing():
            if self.end < len(self.messages):
                await self._show_newest(self.messages)
        self.following = True
        self.scroll_end(animate=False, immediate=True)

    async def show_first(self) -> None:
        """Go to the first message of the conversation (a new window if it is not mounted)."""
        async with self._changing():
            if self.first > 0:
                await self._reset(None)
                self.first = self.end = 0
                await self._mount_newer(OPENING_BATCH, rendered=False, quick=True)
        self.following = False
        self.scroll_home(animate=False, immediate=True)
        self.remember_anchor()

    async def add_older(self, older: Sequence[ShownMessage]) -> None:
        """Put `older` messages before those shown (the rest of a conversation that opened with
        its newest messages only); what is mounted stays where it is."""
        if not older:
            return
        async with self._changing():
            shift = len(older)
            self.messages[:0] = older
            self.first += shift
            self.end += shift
            for view in self.message_views:
                view.index += shift
            self._show_notes()

    async def _show_newest(self, messages: Sequence[ShownMessage]) -> None:
        await self._reset(messages)
        self.first = self.end = len(self.messages)
        self.following = True
        await self._mount_older(OPENING_BATCH, rendered=False, quick=True)

    async def _reset(self, messages: Sequence[ShownMessage] | None) -> None:
        """Unmount everything (keeping `messages`, or replacing them) for a new window."""
        self._pending_lines = 0
        self.live = None
        if messages is not None:
            self.messages = list(messages)
        self.forget_layout()
        if self.query("#more-above"):  # the notes stay; the messages go
            if views := self.message_views:
                await self._remove(views)
                self._released.left()  # a conversation: whatever it held, once still
        else:
            self._changed()
            above = Static("", id="more-above", classes="more-note", markup=False)
            below = Static("", id="more-below", classes="more-note", markup=False)
            await self.mount_all([above, below])
        self._schedule()

    async def _remove(self, views: list[MessageView]) -> None:
        """Unmount views and let them go at once."""
        self._changed()
        await self.remove_children(views)
        # Textual keeps the list of displayed children until it is next asked for (which may
        # be long: the layout does not ask), and that list would keep the views alive.
        _ = self.displayed_children
        self._released.removed(len(views))

    async def _mount_older(self, count: int, *, rendered: bool, quick: bool = False) -> None:
        count = min(count, RENDERED_BATCH) if rendered else count
        start = max(0, self.first - count)
        views = self._views(start, self.first, rendered, quick)
        self.first = start
        if views:
            self._changed()
            await self.mount_all(views, after=self.query_one("#more-above"))
        self._show_notes()

    async def _mount_newer(self, count: int, *, rendered: bool, quick: bool = False) -> None:
        count = min(count, RENDERED_BATCH) if rendered else count
        stop = min(len(self.messages), self.end + count)
        views = self._views(self.end, stop, rendered, quick)
        self.end = stop
        if views:
            self._changed()
            await self.mount_all(views, before=self.query_one("#more-below"))
        self._show_notes()

    def _views(self, start: int, stop: int, rendered: bool, quick: bool) -> list[MessageView]:
        view_class = _message_view_class()
        return [
            view_class(self.messages[index], index=index, rendered=rendered, quick=quick)
            for index in range(start, stop)
        ]

    def _show_notes(self) -> None:
        above = self.query_one("#more-above", Static)
        below = self.query_one("#more-below", Static)
        earlier, newer = self.first, len(self.messages) - self.end
        above.update(f"↑ {earlier:,} earlier message{_s(earlier)} · {self.hints[0]}")
        below.update(f"↓ {newer:,} newer message{_s(newer)} · {self.hints[1]}")
        above.display = earlier > 0
        below.display = newer > 0

    # --- a turn ------------------------------------------------------------------------------

    async def add_exchange(self, prompt: str, model: str) -> MessageView:
        """Mount a prompt and the (empty, streaming) reply to it; returns the reply's view."""
        from muxtui.tui.panes.chat.message_view import ShownMessage

        async with self._changing():
            if not self.children:
                await self._reset([])
                self.first = self.end = 0
            elif self.end < len(self.messages):
                await self._show_newest(self.messages)
            self.messages += [
                ShownMessage("user", prompt),
                ShownMessage("assistant", "", model, status="streaming"),
            ]
            await self._mount_newer(2, rendered=True)
            self.live = live = self.message_views[-1]
        self.following = True
        self.scroll_end(animate=False, immediate=True)
        return live

    async def finish_live(self, message: ShownMessage) -> None:
        """Show how the streaming reply ended and keep it with the conversation."""
        view, self.live = self.live, None
        if view is not None:
            self.messages[view.index] = message
            await view.finish(message)

    async def drop_exchange(self) -> None:
        """Forget the last prompt and its reply (the turn never started) and unmount them."""
        async with self._changing():
            self.live = None
            gone = [view for view in self.message_views if view.index >= len(self.messages) - 2]
            del self.messages[-2:]
            self.end = min(self.end, len(self.messages))
            await self._remove(gone)

    # --- scrolling by key --------------------------------------------------------------------

    def scroll_pages(self, pages: int) -> None:
        """Scroll by whole screens now; a burst past what is mounted goes on as it mounts."""
        height = self.scrollable_content_region.height
        if self._awaiting_layout:  # where things are is known after the layout: then
            self._pending_lines += pages * height
            self._schedule()
        else:
            self._scroll_toward(self.scroll_y + self._pending_lines + pages * height)

    def _scroll_toward(self, goal: float) -> None:
        """Scroll to `goal`; what lies past the mounted messages is kept for when they come."""
        self._pending_lines = 0
        regions = self.arranged_regions()
        mounted = [region for view in self.message_views if (region := regions.get(view))]
        if mounted:  # the notes above and below the messages are no part of the conversation
            top = mounted[0].y
            bottom = mounted[-1].bottom - self.scrollable_content_region.height
            if goal < top and self.first > 0:
                self._pending_lines, goal = int(goal - top), top
            elif goal > bottom and self.end < len(self.messages):
                self._pending_lines, goal = int(goal - bottom), bottom
        self.scroll_to(y=goal, animate=False, immediate=True)
        self._schedule()

    def action_page_up(self) -> None:
        """Scroll up a screen (the log's own key, when it has the focus)."""
        self.scroll_pages(-1)

    def action_page_down(self) -> None:
        """Scroll down a screen."""
        self.scroll_pages(1)

    async def action_go_first(self) -> None:
        """Go to the first message."""
        await self.show_first()

    async def action_go_last(self) -> None:
        """Go to the newest message."""
        await self.show_last()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Scrolling may bring an edge of what is mounted near."""
        super().watch_scroll_y(old_value, new_value)
        self._schedule()

    def on_resize(self) -> None:
        """A new size may show more than is mounted."""
        self._schedule()

    # --- the window, one step at a time ------------------------------------------------------

    def _schedule(self) -> None:
        """Run one step of window upkeep after the next refresh (layout is current then)."""
        if not self._step_scheduled and self.is_mounted:
            self._step_scheduled = True
            self.call_after_refresh(self._step)

    async def _step(self) -> None:
        """Mount, render or release one batch; keys typed meanwhile are handled between steps."""
        self._step_scheduled = False
        if self._lock.locked():
            return  # the change in progress schedules a step when it ends
        async with self._lock:
            if not self.is_attached or not self.is_laid_out or self._awaiting_layout:
                return  # the next layout schedules a step
            if self._pending_lines:
                self._scroll_toward(self.scroll_y + self._pending_lines)
            worked = await self._step_once()
        if worked or self._pending_lines:
            self._schedule()

    async def _step_once(self) -> bool:
        height = max(1, self.scrollable_content_region.height)
        top, bottom = self.scroll_y, self.scroll_y + height
        regions = self.arranged_regions()
        views = self.message_views
        mounted = [region for view in views if (region := regions.get(view)) is not None]
        content_top = min((region.y for region in mounted), default=0)
        content_bottom = max((region.bottom for region in mounted), default=0)
        # While the view is unfilled, Rich's quick rendering (no markup showing); else plain
        # text for now. Either gets the Markdown widget once near the view.
        unfilled = content_bottom - content_top < height
        # A burst of keys far past what is mounted brings in more at a time.
        batch = min(MOUNTED_AT_MOST, max(BATCH, abs(self._pending_lines) // 3))
        if self.first > 0 and top - content_top < KEEP_SCREENS * height:
            await self._mount_older(batch, rendered=False, quick=unfilled)
        elif self.end < len(self.messages) and content_bottom - bottom < KEEP_SCREENS * height:
            await self._mount_newer(batch, rendered=False, quick=unfilled)
        else:
            rendered = await self._render_nearest(views, regions, top, bottom, height)
            return await self._release_far(views, regions, top, bottom, height) or rendered
        await self._release_far(views, regions, top, bottom, height)
        return True

    async def _render_nearest(
        self,
        views: list[MessageView],
        regions: dict[Widget, Region],
        top: float,
        bottom: float,
        height: int,
    ) -> bool:
        """Give Markdown to the plain replies within a screen of the view, nearest first, for
        at most RENDER_BUDGET_S (so keys are handled in between)."""
        near = sorted(
            (max(0, region.y - bottom, top - region.bottom), view.index, view)
            for view in views
            if not view.rendered
            and (region := regions.get(view)) is not None
            and max(0, region.y - bottom, top - region.bottom) <= KEEP_SCREENS * height
        )
        if not near:
            return False
        deadline = time.monotonic() + RENDER_BUDGET_S
        self._changed()
        for _distance, _index, view in near:
            await view.render_markdown()
            if time.monotonic() > deadline:
                break
        return True

    async def _release_far(
        self,
        views: list[MessageView],
        regions: dict[Widget, Region],
        top: float,
        bottom: float,
        height: int,
    ) -> bool:
        """Unmount the views more than a few screens from the view, and the farthest while more
        than the limit are mounted: what is mounted stays a few screens long."""
        far = RELEASE_SCREENS * height

        def above(view: MessageView) -> float:  # rows between the view and the top; else < 0
            region = regions.get(view)
            return top - region.bottom if region is not None else -1

        def below(view: MessageView) -> float:
            region = regions.get(view)
            return region.y - bottom if region is not None else -1

        start, stop = 0, len(views)
        while start < stop and above(views[start]) > far:
            start += 1
        while stop > start and below(views[stop - 1]) > far and self.live is None:
            stop -= 1
        while stop - start > MOUNTED_AT_MOST:
            if above(views[start]) >= below(views[stop - 1]) and above(views[start]) > 0:
                start += 1
            elif below(views[stop - 1]) > 0 and self.live is None:
                stop -= 1
            else:
                break  # the rest is in sight
        released = [*views[:start], *views[stop:]]
        if not released:
            return False
        if start:
            self.first = views[start].index if start < len(views) else self.end
        if stop < len(views):
            self.end = views[stop].index
        await self._remove(released)
        self._released.scrolled_past(len(released))
        self._show_notes()
        return True


def _s(count: int) -> str:
    return "" if count == 1 else "s"
