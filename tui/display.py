"""Small formatting helpers shared by panes and widgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from textual.binding import Binding, BindingType


def shorten_home(path: Path) -> str:
    """The path with the home directory written as `~`."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def describe(error: BaseException) -> str:
    """An error as one line: muxtui's own errors already name the fix; others get their type."""
    from muxtui.engine.errors import MuxtuiError

    if isinstance(error, MuxtuiError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def key_hint(keymap: Mapping[str, str], bindings: Iterable[BindingType], binding_id: str) -> str:
    """How a person presses a binding, `[ui.keys]` remaps included: "ctrl+n" shows as "^n"."""
    default = next(b.key for b in bindings if isinstance(b, Binding) and b.id == binding_id)
    return keymap.get(binding_id, default).split(",")[0].replace("ctrl+", "^")
