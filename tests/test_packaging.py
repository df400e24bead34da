"""A regular (non-editable) install claims one import name, `muxtui`, and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding muxtui from a built wheel; dependencies come from the test venv."""
    work = tmp_path_factory.mktemp("packaging")
    wheels = work / "wheels"
    # A clean copy: an in-tree build would leave build/ behind, and reuse it (stale modules too).
    source = work / "source"
    skip = shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__", ".gl")
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=skip)
    # Built offline from the test venv's setuptools, so the test needs no network.
    build = ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(source)],
        check=True,
        capture_output=True,
        cwd=work,
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (textual, httpx, ...) are read from the test venv, but not its muxtui.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    (wheel,) = wheels.glob("muxtui-*.whl")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv


def _clean_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HOME"] = str(home)
    return env


def test_install_claims_only_the_muxtui_name(installed_venv: Path, tmp_path: Path) -> None:
    shown = subprocess.run(
        [str(installed_venv / "bin" / "python"), "-m", "pip", "show", "-f", "muxtui"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(tmp_path),
    ).stdout
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    top_level = {file.split("/")[0] for file in files if "/" in file}
    assert "muxtui" in top_level
    assert not top_level & {"engine", "tui", "themes"}, top_level
    assert "muxtui/engine/core.py" in files
    assert "muxtui/tui/app.tcss" in files
    assert any(file.startswith("muxtui/themes/") and file.endswith(".toml") for file in files)


def test_runs_from_a_folder_with_its_own_engine_and_tui(
    installed_venv: Path, tmp_path: Path
) -> None:
    project = tmp_path / "someone-elses-project"
    for name in ("engine", "tui", "themes"):
        package = project / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('the wrong package')\n")
    home = tmp_path / "home"
    result = subprocess.run(
        [str(installed_venv / "bin" / "python"), "-m", "muxtui", "models", "--json"],
        capture_output=True,
        text=True,
        cwd=project,
        env=_clean_env(home),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)
