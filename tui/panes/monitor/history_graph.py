"""A history graph drawn in braille dots: two points a cell wide, four a cell high, fixed bounds.

Textual's `Sparkline` scales every frame to its own min and max, so a flat 3 % CPU line would
fill the box; this graph keeps the bounds it is given (0-100 %, 0-total GiB) the way nvitop's
history graphs do, and at the same cell count it shows twice the points and four times the
levels. Rows are computed once per new data (or size), then served from a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from textual.strip import Strip
from textual.widget import Widget

# Braille dots filled from the bottom of a cell: index = how many of the column's four dots.
_LEFT = (0x00, 0x40, 0x44, 0x46, 0x47)
_RIGHT = (0x00, 0x80, 0xA0, 0xB0, 0xB8)
_BRAILLE = 0x2800


def dot_levels(
    values: Sequence[float], points: int, columns: int, lower: float, upper: float, height: int
) -> list[int]:
    """Filled dots (0..4*height) for each of `columns` dot columns.

    `values` are the newest `len(values)` of `points` slots spanning the window, newest last;
    slots before the first value stay empty. Each dot column shows the highest value among the
    slots it covers, so a short spike is never averaged away.
    """
    levels = [0] * columns
    if not values or columns <= 0 or height <= 0:
        return levels
    points = max(points, len(values), 1)
    offset = points - len(values)  # empty slots on the left
    span = upper - lower if upper > lower else 1.0
    top = 4 * height
    for column in range(columns):
        first = column * points // columns
        last = max((column + 1) * points // columns, first + 1)
        start, end = max(first - offset, 0), last - offset
        if end <= 0:
            continue
        peak = max(values[start:end])
        ratio = (peak - lower) / span
        if ratio > 0:
            levels[column] = min(top, max(1, round(ratio * top)))
    return levels


def braille_rows(levels: Sequence[int], height: int) -> list[str]:
    """The graph's text, top row first, from per-dot-column levels (two columns a cell)."""
    rows = []
    pairs = [
        (levels[i], levels[i + 1] if i + 1 < len(levels) else 0) for i in range(0, len(levels), 2)
    ]
    for row in range(height - 1, -1, -1):
        base = 4 * row
        rows.append(
            "".join(
                chr(
                    _BRAILLE
                    | _LEFT[min(max(left - base, 0), 4)]
                    | _RIGHT[min(max(right - base, 0), 4)]
                )
                for left, right in pairs
            )
        )
    return rows


class HistoryGraph(Widget):
    """An area graph of the newest values over a fixed window, between fixed bounds."""

    DEFAULT_CSS = """
    HistoryGraph {
        height: 4;
        min-height: 1;
    }
    HistoryGraph > .history-graph--line {
        color: $accent;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"history-graph--line"}

    def __init__(
        self,
        *,
        lower: float = 0.0,
        upper: float = 100.0,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.lower = lower
        self.upper = upper
        self.values: tuple[float, ...] = ()
        self.points = 1
        self._rows: list[Strip] | None = None
        self._rows_for: tuple[int, int] = (0, 0)

    def show(self, values: tuple[float, ...], points: int, upper: float | None = None) -> None:
        """Draw `values` (newest last) in a window of `points` slots; repaint only on change."""
        upper = self.upper if upper is None else upper
        if values == self.values and points == self.points and upper == self.upper:
            return
        self.values, self.points, self.upper = values, points, upper
        self._rows = None
        self.refresh()

    def text_rows(self) -> list[str]:
        """The graph as plain text, top row first (what a screen reader or test sees)."""
        return [strip.text for strip in self._strips()]

    def render_line(self, y: int) -> Strip:
        """One row of the graph."""
        strips = self._strips()
        return strips[y] if 0 <= y < len(strips) else Strip.blank(self.size.width)

    def notify_style_update(self) -> None:
        """Theme changed: recolour."""
        super().notify_style_update()
        self._rows = None

    def _strips(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        if self._rows is None or self._rows_for != (width, height):
            levels = dot_levels(self.values, self.points, 2 * width, self.lower, self.upper, height)
            style = self.get_component_rich_style("history-graph--line")
            self._rows = [
                Strip([Segment(text, style)], width) for text in braille_rows(levels, height)
            ]
            self._rows_for = (width, height)
        return self._rows
