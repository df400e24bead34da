"""Small formatting helpers shared by panes and widgets."""

from __future__ import annotations

from pathlib import Path


def shorten_home(path: Path) -> str:
    """The path with the home directory written as `~`."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def describe(error: BaseException) -> str:
    """An error as one line: muxtui's own errors already name the fix; others get their type."""
    from engine.errors import MuxtuiError

    if isinstance(error, MuxtuiError):
        return str(error)
    return f"{type(error).__name__}: {error}"
