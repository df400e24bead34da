"""A local server's start-up shows in the chat as a phase and a percentage, never raw log lines."""

from __future__ import annotations

from muxtui.tui.panes.chat.loading_words import LoadingWords

# What the engine reports while the bundled llama-server loads Gemma (lines from a real log).
LLAMA_START = [
    "starting gemma-3-270m",
    "loading gemma-3-270m (0.5 s): 0.00.008.793 I srv    load_model: loading model "
    "'/home/me/.cache/muxtui/models/gemma-3-270m-q4_k_m.gguf'",
    "loading gemma-3-270m (1.0 s): AMX is not ready to be used!",
    "loading gemma-3-270m (1.5 s): 0.00.984.159 W load: control-looking token:    212 '</s>' "
    "was not control-type; this is probably a bug in the model. its type will be overridden",
    "loading gemma-3-270m (2.0 s): 0.01.131.109 I cmn          init: llama threadpool init, "
    "n_threads = 2",
    "loading gemma-3-270m (2.5 s): 0.01.181.858 I srv  llama_server: listening on "
    "http://127.0.0.1:47565",
    "gemma-3-270m ready in 2.6 s on port 47565",
]


def test_llama_server_start_reads_as_phases() -> None:
    words = LoadingWords()
    shown = [words.describe(status) for status in LLAMA_START]
    assert shown == [
        "starting gemma-3-270m…",
        "starting gemma-3-270m… loading model",
        "starting gemma-3-270m… loading model",
        "starting gemma-3-270m… loading model",
        "starting gemma-3-270m… initializing",
        "starting gemma-3-270m… almost ready",
        "ready · gemma-3-270m loaded in 2.6 s",
    ]
    for raw in ("AMX", "control-looking", "bug in the model", "0.00.", "127.0.0.1"):
        assert not any(raw in line for line in shown), raw


def test_progress_percentages_are_kept_until_the_phase_changes() -> None:
    words = LoadingWords()
    assert words.describe("loading m (0.5 s): loading model 'x.gguf'... 46%") == (
        "starting m… loading model 46%"
    )
    assert words.describe("loading m (1.0 s): AMX is not ready to be used!") == (
        "starting m… loading model 46%"
    )
    assert words.describe("loading m (1.5 s): load_tensors: 99.5 %") == (
        "starting m… loading model 100%"
    )
    assert words.describe("loading m (2.0 s): warming up the model") == "starting m… warming up"


def test_a_line_with_no_phase_yet_says_the_server_is_starting() -> None:
    assert LoadingWords().describe("loading m (0.5 s): AMX is not ready to be used!") == (
        "starting m… starting the server"
    )


def test_muxtuis_own_messages_pass_through() -> None:
    words = LoadingWords()
    for status in (
        "unloading big to make room (memory budget)",
        "preparing the bundled model for gemma-3-270m (first use)",
        "connection refused; retrying in 0.5 s (1/3)",
    ):
        assert words.describe(status) == status


def test_a_load_warning_seen_first_still_reads_as_loading() -> None:
    # Progress is reported every half second with the log's last line, so a fast load may show
    # only llama.cpp's warnings: those written by its loader still name the phase.
    words = LoadingWords()
    assert words.describe(LLAMA_START[3]) == "starting gemma-3-270m… loading model"
