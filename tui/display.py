"""Small formatting helpers shared by panes and widgets."""

from __future__ import annotations

from pathlib import Path


def shorten_home(path: Path) -> str:
    """The path with the home directory written as `~`."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)
