"""Before a batch sends anything: what the input holds, which model each item goes to, what an
earlier run finished, and in which order the models run (local ones a few at a time).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from muxtui.engine.batch.inputs import InputError, InputFormat, Item, Problem, read_items
from muxtui.engine.batch.ledger import Resume, request_key
from muxtui.engine.errors import UnknownModelError, UsageError
from muxtui.engine.router import Target

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SHOWN_IDS = 5


def encode_body(body: dict[str, object]) -> bytes:
    """A body (without `model`) as sent: compact JSON, key order as given (it can matter)."""
    return _dumps(body).encode()


def identity(target: Target) -> str:
    """What the ledger records as the resolved model."""
    return f"{target.provider}:{target.model_id}"


class Models:
    """Each item's target, resolved once per name: `--model`, the line's model, or the default."""

    def __init__(
        self, resolve: Callable[[str], Target], forced: str | None, default: str | None
    ) -> None:
        self._resolve = resolve
        self._forced = forced
        self._default = default
        self._targets: dict[str | None, Target | str] = {}

    def target(self, item: Item) -> Target | Problem:
        """The item's target, or a `Problem` naming the model that does not resolve."""
        name = self._forced or item.model or self._default
        found = self._targets.get(name)
        if found is None:
            found = self._targets[name] = self._lookup(name)
        if isinstance(found, str):
            message = f"line {item.line}: {found}"
            return Problem(item.line, item.custom_id, "unknown_model", message)
        return found

    def _lookup(self, name: str | None) -> Target | str:
        if name is None:
            return "no model named; give --model or a model field (see `muxtui models`)"
        try:
            return self._resolve(name)
        except UnknownModelError as exc:
            return str(exc)


@dataclass
class Group:
    """The items of one resolved model that this run sends."""

    target: Target
    to_send: int = 0


@dataclass
class Survey:
    """One read of the whole input, before anything is sent."""

    total: int = 0  # items and bad lines
    valid: int = 0
    skipped: int = 0  # finished earlier with the same request
    problems: int = 0
    problem_codes: Counter[str] = field(default_factory=Counter)
    first_problem: str = ""
    groups: dict[str, Group] = field(default_factory=dict)  # by identity, in input order
    stale: set[str] = field(default_factory=set)  # results to remove before sending again
    changed: list[str] = field(default_factory=list)  # a few ids whose request changed
    changed_count: int = 0
    adopted: dict[str, int] = field(default_factory=dict)  # results without a ledger key

    @property
    def to_send(self) -> int:
        """Requests this run sends."""
        return sum(group.to_send for group in self.groups.values())


def survey(
    path: Path, fmt: InputFormat, template: str | None, models: Models, resume: Resume
) -> Survey:
    """Read the input once: counts, groups, and which earlier results changed (blocking)."""
    found = Survey()
    done = resume.done
    for entry in read_items(path, fmt, template):
        found.total += 1
        target = entry if isinstance(entry, Problem) else models.target(entry)
        if isinstance(target, Problem):
            found.problems += 1
            found.problem_codes[target.code] += 1
            found.first_problem = found.first_problem or target.message
            if target.custom_id in done:
                found.stale.add(target.custom_id)  # it was fine before; now it is a bad line
            continue
        assert isinstance(entry, Item)
        found.valid += 1
        resolved = identity(target)
        group = found.groups.get(resolved)
        if group is None:
            group = found.groups[resolved] = Group(target)
        previous = done.get(entry.custom_id)
        if previous is None:
            group.to_send += 1
            continue
        key = request_key(resolved, encode_body(entry.body))
        if previous == key:
            found.skipped += 1
        elif previous == 0:
            found.skipped += 1
            found.adopted[entry.custom_id] = key
        else:
            found.stale.add(entry.custom_id)
            found.changed_count += 1
            if len(found.changed) < _SHOWN_IDS:
                found.changed.append(entry.custom_id)
            group.to_send += 1
    return found


def check_usable(found: Survey, path: Path) -> None:
    """Raise `UsageError` when nothing in the input could ever be sent."""
    if found.total == 0:
        raise InputError(f"{path} holds no items; add one prompt or request per line")
    if found.valid == 0:
        if set(found.problem_codes) == {"unknown_model"}:
            first = found.first_problem.split(": ", 1)[-1]
            raise UsageError(f"batch: no item has a usable model: {first}")
        raise InputError(f"{path}: no line can be sent; the first problem: {found.first_problem}")


def waves(found: Survey, ordered: bool, local_at_once: int) -> list[list[Group]]:
    """Groups to run together: remote ones at once, local ones a few at a time (or all if ordered).

    A local server is started once and kept for all its items, never swapped out and back.
    """
    sending = [group for group in found.groups.values() if group.to_send]
    if ordered:
        return [sending]
    remote = [group for group in sending if not group.target.local]
    local = [group for group in sending if group.target.local]
    size = max(1, local_at_once)
    chunks = [local[start : start + size] for start in range(0, len(local), size)] or [[]]
    return [remote + chunks[0], *chunks[1:]] if remote or chunks[0] else []


def changed_note(found: Survey) -> str:
    """One line about requests that changed since the last run, or ""."""
    if not found.changed_count:
        return ""
    shown = ", ".join(found.changed)
    more = (
        f" and {found.changed_count - len(found.changed)} more"
        if found.changed_count > len(found.changed)
        else ""
    )
    return (
        f"{found.changed_count} item(s) changed since the last run (body or model) and are "
        f"redone: {shown}{more}"
    )
