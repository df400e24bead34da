"""Theme data files (`*.toml`) and the loader that turns them into Textual themes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.theme import Theme

THEMES_DIR = Path(__file__).resolve().parent

# The Theme fields a file may set besides `variables`; anything else is a mistake in the file.
_COLOUR_FIELDS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)


class ThemeFileError(ValueError):
    """A theme file is not valid TOML or does not describe a theme."""


def theme_from_data(data: dict[str, Any], source: str) -> Theme:
    """Build a Textual theme from the parsed contents of one theme file."""
    from textual.theme import Theme

    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ThemeFileError(f"{source}: needs a `name`")
    if not isinstance(data.get("primary"), str):
        raise ThemeFileError(f"{source}: needs a `primary` colour")
    known = {*_COLOUR_FIELDS, "name", "dark", "luminosity_spread", "text_alpha", "variables"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ThemeFileError(f"{source}: unknown keys {', '.join(unknown)}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(value, str) for value in variables.values()
    ):
        raise ThemeFileError(f"{source}: `variables` must be a table of strings")
    colours = {key: data[key] for key in _COLOUR_FIELDS if key in data}
    return Theme(
        name=name,
        dark=bool(data.get("dark", True)),
        luminosity_spread=float(data.get("luminosity_spread", 0.15)),
        text_alpha=float(data.get("text_alpha", 0.95)),
        variables=dict(variables),
        **colours,
    )


def load_themes(directory: Path = THEMES_DIR) -> list[Theme]:
    """Every `*.toml` theme in `directory`, sorted by file name."""
    themes = []
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ThemeFileError(f"{path}: {exc}") from None
        themes.append(theme_from_data(data, str(path)))
    return themes
