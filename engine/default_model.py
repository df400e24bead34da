"""Which model to start on when none is named (the app's first model, `ask` without --model).

The order: the last used model if it works; else a warm local server; else a configured or
discovered model that answers; else the bundled model; else a model from the catalog of a
provider found through an API key in the environment (one of hundreds, perhaps paid: a worse
first pick than the offline model). Never a model that failed to start or whose runtime this
machine cannot run. `default_candidates` gives the candidates in that order, pure; the engine
checks the ones that need a provider to answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from muxtui.engine.events import ModelEntry, ServerState


@dataclass(frozen=True)
class ModelChoice:
    """The model picked, and why in one line (for `ask -v` and the app)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A model that could be the default, with what must hold for it to be picked."""

    name: str
    reason: str
    provider: str = ""  # set: picked only if this provider answers
    problem: str = ""  # set: known not to work here; never picked


@dataclass(frozen=True)
class ChoiceInputs:
    """What the order depends on besides the model rows."""

    last_model: str = ""
    last_provider: str | None = None  # the provider `last_model` resolves to; "local"; None
    loopback: frozenset[str] = frozenset()  # providers on this machine muxtui did not start
    keyed: frozenset[str] = frozenset()  # providers found through an API key in the environment
    can_run_gguf: bool = True  # a llama-server is at hand for GGUF files found on disk


def problem(entry: ModelEntry) -> str:
    """Why `entry` cannot be the default, in a few words ('' when nothing is known against it);
    the full cause is the entry's `incompatible` or `detail`, shown by `muxtui models`."""
    if entry.incompatible:
        return "cannot run on this machine"
    if entry.state is ServerState.FAILED:
        return "failed to start"
    return ""


async def pick_default(
    entries: Sequence[ModelEntry],
    inputs: ChoiceInputs,
    answers: Callable[[str], Awaitable[bool]],
    *,
    last_only: bool = False,
) -> ModelChoice | None:
    """The first candidate that works: no known problem, and its provider (if any) `answers`.
    With `last_only`, only the last used model is considered."""
    last = inputs.last_model
    note = ""
    for candidate in default_candidates(entries, inputs):
        is_last = candidate.name == last
        if last_only and not is_last:
            break
        if not candidate.problem and (not candidate.provider or await answers(candidate.provider)):
            return ModelChoice(candidate.name, candidate.reason + note)
        if is_last:
            note = f"; last used {last} " + (candidate.problem or "does not answer")
    return None


def default_candidates(entries: Sequence[ModelEntry], inputs: ChoiceInputs) -> Iterator[Candidate]:
    """Every possible default in the order of preference, each name once."""
    seen: set[str] = set()
    for candidate in _ordered(entries, inputs):
        if candidate.name not in seen:
            seen.add(candidate.name)
            yield candidate


def _ordered(entries: Sequence[ModelEntry], inputs: ChoiceInputs) -> Iterator[Candidate]:
    by_name = {entry.name: entry for entry in entries}
    last = inputs.last_model
    if last and inputs.last_provider is not None:
        last_entry = by_name.get(last)
        blocked = problem(last_entry) if last_entry is not None else ""
        must_answer = "" if inputs.last_provider == "local" else inputs.last_provider
        yield Candidate(last, "the last used model", must_answer, blocked)

    managed = [e for e in entries if e.local]
    running_here = [e for e in entries if not e.local and e.provider in inputs.loopback]
    for entry in managed:
        if entry.state in (ServerState.WARM, ServerState.BUSY) and not problem(entry):
            yield Candidate(entry.name, "a warm local server")
    for entry in running_here:
        if entry.state is ServerState.WARM:
            yield Candidate(entry.name, "a server running on this machine", entry.provider)

    remote = [e for e in entries if not e.local and e.provider not in inputs.loopback]
    for entry in remote:
        if entry.source == "config":
            yield Candidate(entry.name, "a configured model that answers", entry.provider)
    for entry in managed:
        if entry.source == "config":
            yield Candidate(entry.name, "a configured local model", problem=problem(entry))
    for entry in running_here:
        yield Candidate(entry.name, "a model on a server on this machine", entry.provider)
    for entry in remote:
        if entry.source != "config" and entry.provider not in inputs.keyed:
            reason = f"a model that configured provider {entry.provider} lists"
            yield Candidate(entry.name, reason, entry.provider)
    if inputs.can_run_gguf:
        for entry in managed:
            if entry.source == "discovered":
                reason = "a GGUF file found in the model folders"
                yield Candidate(entry.name, reason, problem=problem(entry))

    for entry in managed:
        if entry.source == "bundled":
            reason = "the bundled model (nothing configured or discovered answers)"
            yield Candidate(entry.name, reason, problem=problem(entry))

    for entry in remote:
        if entry.provider in inputs.keyed:
            reason = f"a model {entry.provider} lists (its API key is in the environment)"
            yield Candidate(entry.name, reason, entry.provider)
