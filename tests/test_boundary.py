"""The engine works with no UI, and `--version` stays lazy."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, muxtui_env

UI_PACKAGES = {"textual", "tui", "rich"}


def _imported_top_level(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env=muxtui_env(),
        cwd=REPO_ROOT,
        check=True,
    )
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return {name.split(".")[0] for name in modules}


def test_every_engine_module_imports_without_ui() -> None:
    code = (
        "import importlib, pkgutil, engine\n"
        "for info in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    imported = _imported_top_level(code)
    assert "engine" in imported
    assert not imported & UI_PACKAGES, imported & UI_PACKAGES


def test_version_imports_neither_textual_nor_httpx() -> None:
    code = (
        "import contextlib, io\n"
        "from muxtui.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--version'])\n"
        "assert out.getvalue().startswith('muxtui '), out.getvalue()\n"
    )
    imported = _imported_top_level(code)
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
