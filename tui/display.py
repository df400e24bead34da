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


# Keys whose Textual names read badly in a hint.
KEY_NAMES = {"slash": "/", "pageup": "PgUp", "pagedown": "PgDn"}


def key_hint(
    keymap: Mapping[str, str],
    bindings: Iterable[BindingType],
    binding_id: str,
    *,
    spelled_out: bool = False,
) -> str:
    """How a person presses a binding, `[ui.keys]` remaps included.

    "ctrl+n" shows as "^n", or as "Ctrl+N" when `spelled_out`.
    """
    default = next(b.key for b in bindings if isinstance(b, Binding) and b.id == binding_id)
    key = keymap.get(binding_id, default).split(",")[0].replace("escape", "esc")
    parts = [KEY_NAMES.get(part, part) for part in key.split("+")]
    if spelled_out:
        return "+".join(
            part.upper() if len(part) == 1 else part[0].upper() + part[1:] for part in parts
        )
    return "+".join(parts).replace("ctrl+", "^")


def key_hints(
    keymap: Mapping[str, str], bindings: Iterable[BindingType], *, spelled_out: bool = False
) -> dict[str, str]:
    """`key_hint` for every binding that has an id, by id."""
    listed = list(bindings)
    return {
        binding.id: key_hint(keymap, listed, binding.id, spelled_out=spelled_out)
        for binding in listed
        if isinstance(binding, Binding) and binding.id
    }


NONE = "–"


def format_bytes(count: int) -> str:
    """A byte count in MiB or GiB, or a dash for zero."""
    if count <= 0:
        return NONE
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    return f"{count / 2**20:.0f} MiB"
