"""One batch run: check and survey the input, resume, send every item, write each record.

Order of work: read the input once (counts, models, what changed since an earlier run), repair
the output files, then send the items model by model, with a bounded number in flight per
model, and append a record as each finishes. Cancelling the task stops it cleanly: requests in
flight are dropped (the next run redoes them) and every record written is whole.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from muxtui.engine.batch import ledger
from muxtui.engine.batch.forward import Forwarder, Reply, error_code, model_body
from muxtui.engine.batch.inputs import (
    InputError,
    InputFormat,
    Item,
    Problem,
    detect_format,
    read_items,
)
from muxtui.engine.batch.lanes import Lane, Work, open_lane
from muxtui.engine.batch.output import (
    InOrder,
    OutputFiles,
    OutputPaths,
    Record,
    RecordIds,
    default_output,
    error_line,
    one_line_body,
    result_line,
)
from muxtui.engine.batch.plan import (
    Group,
    Models,
    changed_note,
    check_usable,
    encode_body,
    identity,
    survey,
    waves,
)
from muxtui.engine.batch.progress import Tracker
from muxtui.engine.cache.key import cache_key, wants_cache
from muxtui.engine.errors import MuxtuiError, UsageError
from muxtui.engine.events import BatchProgress, BatchState

if TYPE_CHECKING:
    from muxtui.engine.core import Engine

BATCH_MIN_RETRIES = 6  # a batch runs unattended: transient errors get more patience than a chat
PROGRESS_EVERY_S = 0.25
_YIELD_EVERY = 256  # items read between yields to the event loop


@dataclass(frozen=True)
class BatchSpec:
    """What to run: the input, where results go, the model and how many requests at once."""

    input: Path
    output: Path | None = None  # default: the input's name with `.results.jsonl`
    model: str | None = None  # every item on this model; None: each line's, else the default
    template: str | None = None  # builds each prompt from the line's fields, e.g. "Sum: {text}"
    concurrency: int | None = None  # per model; None: the servers' slots, else the config
    ordered: bool = False  # write records in input order
    sync_every_s: float | None = 1.0  # fdatasync cadence; 0: before each item counts; None: never
    retries: int | None = None  # attempts after the first; None: the config's, at least 6


@dataclass(frozen=True)
class BatchSummary:
    """How a run ended: its last progress, its files and what it noticed on the way."""

    progress: BatchProgress
    output: Path
    errors: Path
    notes: tuple[str, ...] = ()

    @property
    def exit_status(self) -> int:
        """0 when every item has a result, 1 when the error file has records."""
        return 1 if self.progress.failed else 0


class BatchRun:
    """Runs one `BatchSpec` on an engine, publishing `BatchProgress` as it goes."""

    def __init__(
        self, engine: Engine, spec: BatchSpec, job: int, publish: Callable[[BatchProgress], None]
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.tracker = Tracker(job)
        self.notes: list[str] = []
        self._publish = publish
        policy = engine.retry_policy
        retries = (
            spec.retries if spec.retries is not None else max(policy.retries, BATCH_MIN_RETRIES)
        )
        policy = replace(policy, retries=retries)
        network = engine.config.network
        self.forwarder = Forwarder(
            engine.pool,
            engine.router,
            engine.servers,
            policy,
            network.max_connections,
            engine.response_cache,
        )
        source = spec.input.expanduser()
        self.source = source
        self.paths = OutputPaths.beside((spec.output or default_output(source)).expanduser())
        self.files = OutputFiles(self.paths, spec.sync_every_s)
        self._ids = RecordIds()
        self._done: dict[str, int] = {}
        self._in_order: InOrder | None = None
        self._format = InputFormat.JSONL

    async def run(self) -> BatchSummary:
        """Run to the end; raises `UsageError` for bad input and `CancelledError` if cancelled."""
        tracker = self.tracker
        ticker = asyncio.create_task(self._tick())
        try:
            models, plan = await self._prepare()
            for number, groups in enumerate(plan):
                await self._pass(models, groups, first=number == 0)
            tracker.state = BatchState.FINISHED
            tracker.message = self._ending()
        except asyncio.CancelledError:
            tracker.state = BatchState.CANCELLED
            tracker.message = (
                f"cancelled with {tracker.skipped + tracker.succeeded + tracker.failed} of "
                f"{tracker.total} done; run it again with the same output to resume"
            )
            raise
        except BaseException as exc:
            tracker.state = BatchState.FAILED
            tracker.message = str(exc) if isinstance(exc, MuxtuiError) else repr(exc)
            raise
        finally:
            ticker.cancel()
            await asyncio.shield(self.files.aclose())
            self._publish(tracker.snapshot())
        return BatchSummary(
            tracker.snapshot(), self.paths.results, self.paths.errors, tuple(self.notes)
        )

    # --- before sending ------------------------------------------------------------------------

    async def _prepare(self) -> tuple[Models, list[list[Group]]]:
        spec, source, paths, engine = self.spec, self.source, self.paths, self.engine
        _check_paths(source, paths)
        fmt = self._format = detect_format(source)
        if spec.model:
            await engine.check_model(spec.model)  # an unknown --model is one error, not one a line
        else:
            await engine.wait_discovered()  # lines may name models discovery is still finding
        resolve = engine.router.resolve
        default = None if spec.model else await engine.default_model()
        models = Models(resolve, spec.model, default.name if default else None)
        self.files.lock()
        self._status("reading the input")
        resume = await asyncio.to_thread(ledger.load, paths.results, paths.errors, paths.ledger)
        found = await asyncio.to_thread(survey, source, fmt, spec.template, models, resume)
        check_usable(found, source)
        done = self._done = resume.done
        for custom_id in found.stale:
            done.pop(custom_id, None)
        done.update(found.adopted)
        repair = asyncio.ensure_future(
            asyncio.to_thread(self._repair, resume, found.stale, bool(found.adopted))
        )
        try:
            await asyncio.shield(repair)
        except asyncio.CancelledError:
            await repair  # a rewrite in progress finishes before the lock is let go
            raise
        self.files.open()
        for custom_id, key in found.adopted.items():
            self.files.add_key(custom_id, key)
        self._notes(resume, found.skipped, changed_note(found))
        tracker = self.tracker
        tracker.total, tracker.skipped = found.total, found.skipped
        plan = waves(found, spec.ordered, engine.config.cache.max_models)
        if not plan and found.problems:
            plan = [[]]  # nothing to send, but the bad lines still get their records
        if spec.ordered:
            self._in_order = InOrder(max(256, 8 * (spec.concurrency or 16)), self.files.add)
        return models, plan

    def _repair(self, resume: ledger.Resume, stale: set[str], adopted: bool) -> None:
        paths = self.paths
        if stale or resume.needs_rewrite:
            ledger.rewrite_results(paths.results, stale)
        elif resume.torn:
            ledger.truncate(paths.results, resume.results_size)
        if resume.errors_before:
            ledger.truncate(paths.errors, 0)  # every failed item is tried again
        if not self._done and not adopted:
            ledger.truncate(paths.ledger, 0)  # no results: an old ledger says nothing

    def _notes(self, resume: ledger.Resume, skipped: int, changed: str) -> None:
        notes = self.notes
        if skipped:
            notes.append(f"{skipped} item(s) already finished in {self.paths.results}: skipped")
        if changed:
            notes.append(changed)
        if resume.errors_before:
            notes.append(f"{resume.errors_before} failed item(s) from the last run: tried again")
        if resume.torn:
            notes.append(f"cut a torn last line from {self.paths.results} (an interrupted write)")
        if resume.dropped:
            notes.append(f"removed {resume.dropped} unreadable or repeated line(s) from the output")

    # --- sending -------------------------------------------------------------------------------

    async def _pass(self, models: Models, groups: list[Group], *, first: bool) -> None:
        lanes: dict[str, Lane] = {}
        try:
            default = self.engine.config.network.max_connections
            for group in groups:
                lane = lanes[identity(group.target)] = await open_lane(
                    self.forwarder,
                    group.target,
                    self.spec.concurrency,
                    default,
                    self.notes,
                    self._status,
                )
                if self.engine.config.response_cache.backend != "off":
                    lane.cache_identity = await self.engine.model_identity(group.target.name)
            self.tracker.concurrency = sum(lane.concurrency for lane in lanes.values())
            self.tracker.state = BatchState.RUNNING
            self._status(f"sending, {self.tracker.concurrency} at once")
            async with asyncio.TaskGroup() as workers:
                for lane in lanes.values():
                    for _ in range(lane.concurrency):
                        workers.create_task(self._worker(lane))
                await self._produce(models, lanes, first)
        except BaseExceptionGroup as group:
            error = _first_error(group)  # one clear error rather than a group of tracebacks
            if error is None:
                raise
            raise error from None
        finally:
            for lane in lanes.values():
                await lane.close()

    async def _produce(self, models: Models, lanes: dict[str, Lane], first: bool) -> None:
        done, in_order = self._done, self._in_order
        seq = 0
        count = 0
        for entry in read_items(self.source, self._format, self.spec.template):
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            target = models.target(entry) if isinstance(entry, Item) else entry
            if isinstance(target, Problem) or not isinstance(entry, Item):
                assert isinstance(target, Problem)
                if first and target.custom_id not in done:
                    record = Record(target.custom_id, 0, self._problem_line(target))
                    if in_order is not None:
                        await in_order.admit(seq)
                        in_order.finish(seq, record)
                        seq += 1
                    else:
                        self.files.add(record)
                    self.tracker.bad_line(target.custom_id, target.line, target.message)
                continue
            if entry.custom_id in done:
                continue
            resolved = identity(target)
            lane = lanes.get(resolved)
            if lane is None:
                continue  # another model's turn
            payload = encode_body(entry.body)
            key = ledger.request_key(resolved, payload)
            body = model_body(lane.route.model_id, payload)
            reply_key = None
            if lane.cache_identity and wants_cache(entry.body):
                reply_key = cache_key(entry.body, lane.cache_identity)
            work = Work(entry.custom_id, entry.line, body, key, seq, reply_key)
            if in_order is not None:
                await in_order.admit(seq)
                seq += 1
            await lane.queue.put(work)
        for lane in lanes.values():
            for _ in range(lane.concurrency):
                await lane.queue.put(None)

    async def _worker(self, lane: Lane) -> None:
        queue, route, tracker, send = lane.queue, lane.route, self.tracker, self.forwarder.send
        while (work := await queue.get()) is not None:
            started = time.monotonic()
            tracker.in_flight += 1
            outcome: Reply | MuxtuiError
            try:
                outcome = lane.failure or await send(route, work.body, work.cache_key)
            except MuxtuiError as exc:
                outcome = exc
            finally:
                tracker.in_flight -= 1
            latency = time.monotonic() - started
            if isinstance(outcome, Reply):
                body = one_line_body(outcome.content, outcome.parsed)
                line = result_line(
                    self._ids.next(), work.custom_id, outcome.status, outcome.request_id, body
                )
                self._finish(work, Record(work.custom_id, work.key, line))
                tracker.item_done(
                    work.custom_id,
                    work.line,
                    True,
                    latency,
                    outcome.completion_tokens,
                    outcome.parsed,
                )
            else:
                message = str(outcome)
                line = error_line(
                    self._ids.next(), work.custom_id, error_code(outcome), message, work.line
                )
                self._finish(work, Record(work.custom_id, 0, line))
                tracker.item_done(work.custom_id, work.line, False, latency, 0, message)
            await self.files.durable()

    def _finish(self, work: Work, record: Record) -> None:
        if self._in_order is not None:
            self._in_order.finish(work.seq, record)
        else:
            self.files.add(record)

    def _problem_line(self, problem: Problem) -> bytes:
        return error_line(
            self._ids.next(), problem.custom_id, problem.code, problem.message, problem.line
        )

    # --- progress ------------------------------------------------------------------------------

    def _status(self, message: str) -> None:
        self.tracker.message = message

    async def _tick(self) -> None:
        while True:
            self._publish(self.tracker.snapshot())
            await asyncio.sleep(PROGRESS_EVERY_S)

    def _ending(self) -> str:
        tracker = self.tracker
        failed = f", {tracker.failed} failed (see {self.paths.errors})" if tracker.failed else ""
        return f"finished: {tracker.succeeded} sent, {tracker.skipped} skipped{failed}"


def _first_error(group: BaseExceptionGroup[BaseException]) -> MuxtuiError | None:
    for exc in group.exceptions:
        found = _first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, MuxtuiError):
            return found
    return None


def _check_paths(source: Path, paths: OutputPaths) -> None:
    if not source.exists():
        raise InputError(f"{source} does not exist; check the path of the batch input")
    if source.is_dir():
        raise InputError(f"{source} is a directory; give the batch input file")
    resolved = source.resolve()
    for path in (paths.results, paths.errors, paths.ledger):
        if path.resolve() == resolved:
            raise UsageError(f"the output {path} would overwrite the input; choose another -o")
        if path.is_dir():
            raise UsageError(f"cannot write {path}: it is a directory; choose a file name with -o")
    folder = paths.results.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(
            f"cannot write {paths.results}: {folder} {what}; create the folder or choose another -o"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write in {folder} (permission denied); choose another -o")
