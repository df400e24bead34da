"""The constants of the fit estimate that were measured rather than derived from llama.cpp's
source: what the llama-server process costs besides the model's own buffers.

Measured on the bundled llama-server (upstream 7e4c0a9, CPU + Vulkan build) by
`bench/fit_truth.py` over seven models; rerun it after changing the bundled build.
"""

from __future__ import annotations

# File-backed pages of the server binary and its shared libraries (ggml, llama, Vulkan loader).
HOST_LIBRARIES = 23 * 2**20
# Anonymous memory of an idle server before the vocabulary: heap, thread stacks, HTTP server.
HOST_BASE_ANON = int(5.6 * 2**20)
# The vocabulary in memory: token and text maps and the token-to-piece cache, BPE merge ranks.
PER_TOKEN = 189
PER_MERGE = 150
# llama-server's --ctx-checkpoints default: checkpoints kept per slot.
CHECKPOINTS_PER_SLOT = 32
# A CUDA context with cuBLAS on an NVIDIA GPU, before any buffer (not measured here: no GPU).
GPU_RUNTIME_BYTES = 320 * 2**20
