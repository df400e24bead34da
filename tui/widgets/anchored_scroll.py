"""A vertical scroll view that keeps what the person reads in place while content changes.

Following (scrolled to the bottom), it stays at the bottom as content grows. Scrolled up, it
keeps the topmost visible child at the same row when children above it are mounted, removed
or change height, as browsers do (CSS `overflow-anchor`). The adjustment is made while the
compositor lays the children out, so no frame shows the content shifted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.geometry import Region, Size

if TYPE_CHECKING:
    from textual.layout import DockArrangeResult
    from textual.widget import Widget


class AnchoredScroll(VerticalScroll):
    """Scrolls like VerticalScroll; see the module for how it keeps its place."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, can_focus=True)
        self.following = True  # keep the bottom in sight
        self._arranged: DockArrangeResult | None = None
        self._anchor: tuple[Widget, int] | None = None  # topmost visible child, and its row

    def can_follow(self) -> bool:
        """Whether reaching the bottom means following (a subclass says no while more is to
        come below)."""
        return True

    def can_anchor(self, widget: Widget) -> bool:
        """Whether `widget` may be the child kept in place (not one that always stays on top)."""
        return True

    def layout_changed(self) -> None:
        """Called after a new arrangement of the children (a hook for subclasses)."""

    def forget_layout(self) -> None:
        """Drop the last arrangement and anchor (the children are about to be replaced)."""
        self._arranged = None
        self._anchor = None

    def arranged_regions(self) -> dict[Widget, Region]:
        """Each child's region in the scrolled content, margins included, as last laid out
        (empty before)."""
        arranged = self._arranged
        if arranged is None:
            return {}
        return {p.widget: p.region.grow(p.margin) for p in arranged.placements}

    @property
    def is_laid_out(self) -> bool:
        """Whether the children have been laid out since `forget_layout`."""
        return self._arranged is not None

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        """Lay out the children, then keep the bottom (or the anchor child) in place.

        The compositor reads the scroll offset right after this, so the frame that shows new
        content above the view already shows it scrolled to the same place.
        """
        result = super().arrange(size, optimal)
        if optimal:
            return result
        if result is not self._arranged:
            self._arranged = result
            self.layout_changed()
        if self.following:
            goal = max(0, result.total_region.bottom - size.height)
        elif self._anchor is not None:
            widget, row = self._anchor
            region = next((p.region for p in result.placements if p.widget is widget), None)
            if region is None:
                return result
            goal = max(0, region.y - row)
        else:
            return result
        if goal != self.scroll_y:
            self.set_reactive(VerticalScroll.scroll_y, goal)
            self.set_reactive(VerticalScroll.scroll_target_y, goal)
            if self.show_vertical_scrollbar:
                self.vertical_scrollbar.position = goal
        return result

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Follow only at the bottom; remember which child is at the top of the view."""
        super().watch_scroll_y(old_value, new_value)
        self.following = self.can_follow() and new_value >= self.max_scroll_y
        self.remember_anchor()

    def remember_anchor(self) -> None:
        """Take the topmost visible child (and its row) as the one to keep in place."""
        arranged = self._arranged
        if arranged is None:
            return
        top = self.scroll_y
        visible = [
            p
            for p in arranged.placements
            if p.region.bottom > top and p.region.height and self.can_anchor(p.widget)
        ]
        if visible:
            placement = min(visible, key=lambda p: p.region.y)
            self._anchor = (placement.widget, int(placement.region.y - top))
