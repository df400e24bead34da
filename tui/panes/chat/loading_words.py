"""A local server's start-up progress in words: the phase and percentage, never raw log lines."""

from __future__ import annotations

import re

# The engine reports start-up as "loading NAME (1.2 s): <the server's last log line>" and
# "NAME ready in 1.6 s on port 1234"; anything else it says is already written for people.
_LOADING = re.compile(r"^loading (?P<model>.+?) \((?P<seconds>[\d.]+) s\): (?P<line>.*)$", re.S)
_STARTING = re.compile(r"^starting (?P<model>\S+)$")
_READY = re.compile(r"^(?P<model>.+?) ready in (?P<seconds>[\d.]+) s\b")
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s?%")

# What a log line says about the phase, first match wins; lines saying none of these (warnings
# such as "AMX is not ready to be used!") leave the last phase shown.
_PHASES: tuple[tuple[str, str], ...] = (
    ("listening", "almost ready"),
    ("model loaded", "almost ready"),
    ("warming up", "warming up"),
    ("warmup", "warming up"),
    ("initializing", "initializing"),
    ("init:", "initializing"),
    ("kv cache", "allocating the context"),
    ("llama_context", "allocating the context"),
    ("load_tensors", "loading model"),
    ("loading model", "loading model"),
    ("load_model", "loading model"),
    ("model_load", "loading model"),
    ("model_loader", "loading model"),
    (" load:", "loading model"),
)


class LoadingWords:
    """Turns one turn's status reports into short phrases, remembering the last phase seen."""

    def __init__(self) -> None:
        self.phase = ""
        self.percent = ""

    def describe(self, status: str) -> str:
        """The words to show for one status report from the engine."""
        if starting := _STARTING.match(status):
            return f"starting {starting['model']}…"
        if ready := _READY.match(status):
            return f"ready · {ready['model']} loaded in {float(ready['seconds']):.1f} s"
        loading = _LOADING.match(status)
        if loading is None:
            return status
        line = loading["line"].lower()
        phase = next((words for needle, words in _PHASES if needle in line), "")
        if phase and phase != self.phase:
            self.phase, self.percent = phase, ""
        if (percent := _PERCENT.search(line)) is not None:
            self.percent = f"{float(percent[1]):.0f}%"
        words = " ".join(part for part in (self.phase, self.percent) if part)
        return f"starting {loading['model']}… {words or 'starting the server'}"
