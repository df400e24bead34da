"""The bundled runtime's CPU check and its flags for other llama-server builds."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from muxtui.engine.errors import LocalServerError
from muxtui.engine.local.gemma import BUNDLED_GEMMA_CMD
from muxtui.engine.local.runtime import (
    check_cpu,
    cpu_flags,
    fit_template_flags,
    missing_cpu_flags,
    prepare_launch,
)

HASWELL_FLAGS = frozenset(["fpu", "sse", "sse2", "avx", "avx2", "fma", "f16c", "bmi2"])
SANDY_BRIDGE_FLAGS = frozenset(["fpu", "sse", "sse2", "sse4_2", "avx"])


def test_cpu_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx avx2 fma f16c\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(cpuinfo) == frozenset({"fpu", "avx", "avx2", "fma", "f16c"})
    assert cpu_flags(tmp_path / "missing") is None
    (tmp_path / "armish").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert cpu_flags(tmp_path / "armish") is None


def test_what_the_bundled_runtime_needs() -> None:
    assert missing_cpu_flags(HASWELL_FLAGS) == []
    assert missing_cpu_flags(SANDY_BRIDGE_FLAGS) == ["avx2", "fma", "f16c"]
    assert missing_cpu_flags(None) == []  # unknown: let the start say


def test_a_cpu_without_avx2_gets_the_cause_and_the_fix_before_any_start() -> None:
    bundled = "/site-packages/skulk/bin/llama-server"
    with pytest.raises(LocalServerError) as caught:
        check_cpu("gemma-3-270m", [bundled, "-m", "x.gguf"], bundled, SANDY_BRIDGE_FLAGS)
    message = str(caught.value)
    assert "\n" not in message
    assert "this CPU lacks AVX2, FMA, F16C" in message
    assert "[local.gemma-3-270m] cmd" in message
    # behind a wrapper (qemu, nice) it is still the bundled runtime
    with pytest.raises(LocalServerError):
        check_cpu("m", ["nice", bundled], bundled, SANDY_BRIDGE_FLAGS)
    check_cpu("m", [bundled], bundled, HASWELL_FLAGS)
    check_cpu("m", ["/usr/local/bin/llama-server"], bundled, SANDY_BRIDGE_FLAGS)  # their own
    check_cpu("m", ["/usr/local/bin/llama-server"], "", SANDY_BRIDGE_FLAGS)  # no extra


def fake_llama_server(folder: Path, help_text: str) -> str:
    """An executable that prints `help_text` for --help, as a llama-server build would."""
    program = folder / "llama-server"
    program.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(help_text)}\n")
    program.chmod(0o755)
    return str(program)


def test_an_older_llama_server_gets_the_built_in_template_without_no_jinja(
    tmp_path: Path,
) -> None:
    old = fake_llama_server(tmp_path, "--jinja   use jinja template for chat (default: disabled)")
    fitted = fit_template_flags(BUNDLED_GEMMA_CMD, old, "/bundled/llama-server")
    assert shlex.split(fitted) == [t for t in shlex.split(BUNDLED_GEMMA_CMD) if t != "--no-jinja"]


def test_a_current_llama_server_keeps_no_jinja(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    current = fake_llama_server(tmp_path / "new", "--jinja, --no-jinja   (default: enabled)")
    assert fit_template_flags(BUNDLED_GEMMA_CMD, current, "") == BUNDLED_GEMMA_CMD
    # the bundled build is known; a missing binary is left for the start to report
    assert fit_template_flags(BUNDLED_GEMMA_CMD, current, current) == BUNDLED_GEMMA_CMD
    missing = str(tmp_path / "gone" / "llama-server")
    assert fit_template_flags(BUNDLED_GEMMA_CMD, missing, "") == BUNDLED_GEMMA_CMD


def test_the_bundled_runtime_waits_passively_unless_told_otherwise() -> None:
    bundled = "/site-packages/skulk/bin/llama-server"
    env: dict[str, str] = {"PATH": "/usr/bin"}
    prepare_launch("m", [bundled, "-m", "x.gguf"], env, bundled)
    assert env == {"PATH": "/usr/bin", "OMP_WAIT_POLICY": "passive"}
    chosen = {"OMP_WAIT_POLICY": "active"}
    prepare_launch("m", [bundled], chosen, bundled)
    assert chosen == {"OMP_WAIT_POLICY": "active"}
    their_own: dict[str, str] = {}
    prepare_launch("m", ["/opt/llama/llama-server"], their_own, bundled)
    assert their_own == {}
