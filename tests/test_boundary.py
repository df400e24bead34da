"""The engine works with no UI, and `--version` stays lazy."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, muxtui_env

UI_PACKAGES = {"textual", "rich", "muxtui.tui"}


# Modules actually loaded: a None entry in sys.modules marks a module as not importable.
_LOADED = "sorted(n for n, m in sys.modules.items() if m is not None)"


def _imported_modules(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps({_LOADED}))"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        cwd=REPO_ROOT,
        check=True,
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    """Each module's top-level package, and `muxtui.X` for muxtui's own parts."""
    return {
        ".".join(name.split(".")[:2]) if name.startswith("muxtui.") else name.split(".")[0]
        for name in modules
    }


def test_every_engine_module_imports_without_ui() -> None:
    code = (
        "import importlib, pkgutil, muxtui.engine as engine\n"
        "for info in pkgutil.walk_packages(engine.__path__, 'muxtui.engine.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    imported = _packages(_imported_modules(code))
    assert "muxtui.engine" in imported
    assert not imported & UI_PACKAGES, imported & UI_PACKAGES
    assert "engine" not in imported and "tui" not in imported


def test_version_imports_neither_textual_nor_httpx() -> None:
    code = (
        "import contextlib, io\n"
        "from muxtui.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--version'])\n"
        "assert out.getvalue().startswith('muxtui '), out.getvalue()\n"
    )
    imported = _packages(_imported_modules(code))
    assert "muxtui" in imported
    assert "textual" not in imported
    assert "httpx" not in imported


def test_version_command_prints_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "muxtui", "--version"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        check=False,
    )
    from muxtui import __version__

    assert result.returncode == 0
    assert result.stdout.strip() == f"muxtui {__version__}"


def test_no_engine_module_depends_on_which_one_imports_httpx_first() -> None:
    # Each of these imports httpx itself; whichever is imported first, no UI library follows.
    for module in ("pool", "retry", "router", "core"):
        imported = _packages(_imported_modules(f"import muxtui.engine.{module}"))
        assert "httpx" in imported, module
        assert not imported & UI_PACKAGES, (module, imported & UI_PACKAGES)
