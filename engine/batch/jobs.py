"""Batch runs owned by the engine, so a run outlives the pane (or command) that started it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from muxtui.engine.batch.forward import Forwarder, Reply, model_body
from muxtui.engine.batch.ledger import find_record
from muxtui.engine.batch.output import OutputPaths, default_output
from muxtui.engine.batch.plan import encode_body
from muxtui.engine.batch.runner import BatchRun, BatchSpec, BatchSummary
from muxtui.engine.cache.key import cache_key, wants_cache
from muxtui.engine.errors import MuxtuiError, UnknownModelError
from muxtui.engine.events import BatchProgress, BatchState

if TYPE_CHECKING:
    from muxtui.engine.core import Engine

ProgressCallback = Callable[[BatchProgress], None]


class BatchJob:
    """A batch running in the background: its latest progress, how it ended, and cancel."""

    def __init__(self, job: int, spec: BatchSpec) -> None:
        self.id = job
        self.spec = spec
        self.progress = BatchProgress(job=job, state=BatchState.PREPARING, total=0)
        self.summary: BatchSummary | None = None
        self.error = ""  # why it failed, one line
        self.task: asyncio.Task[BatchSummary] | None = None
        self._changed = asyncio.Event()

    @property
    def running(self) -> bool:
        """Whether the run has not ended yet."""
        return self.task is not None and not self.task.done()

    def cancel(self) -> None:
        """Stop the run cleanly: requests in flight are dropped, every record written is whole."""
        if self.task is not None:
            self.task.cancel()

    async def wait(self) -> BatchSummary | None:
        """Wait for the end; the summary, or None if it was cancelled or failed."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        return self.summary

    async def updates(self) -> AsyncIterator[BatchProgress]:
        """Each new progress as it is published (a few times a second), the last one included."""
        seen: BatchProgress | None = None
        while True:
            if self.progress is not seen:
                seen = self.progress
                yield seen
            if not self.running and seen is self.progress:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)

    @property
    def paths(self) -> OutputPaths:
        """The run's result, error and ledger files."""
        source = self.spec.input.expanduser()
        return OutputPaths.beside((self.spec.output or default_output(source)).expanduser())

    async def record(self, custom_id: str) -> dict[str, Any] | None:
        """The result or error record written for `custom_id`, read from the files."""
        paths = self.paths
        return await asyncio.to_thread(find_record, (paths.results, paths.errors), custom_id)

    def ended(self) -> None:
        """The run's task is over: wake `updates()` so it ends at once."""
        self._changed.set()

    def publish(self, progress: BatchProgress) -> None:
        """Take a new progress and wake whoever watches `updates()`."""
        self.progress = progress
        self._changed.set()


class BatchJobs:
    """Starts and remembers the engine's batch runs; at most one runs per output file."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._jobs: list[BatchJob] = []
        self._forwarder: Forwarder | None = None

    @property
    def jobs(self) -> tuple[BatchJob, ...]:
        """Every run started since the engine started, oldest first."""
        return tuple(self._jobs)

    @property
    def latest(self) -> BatchJob | None:
        """The most recent run, running or not."""
        return self._jobs[-1] if self._jobs else None

    def start(self, spec: BatchSpec) -> BatchJob:
        """Start a run in the background and return its handle."""
        job = BatchJob(len(self._jobs) + 1, spec)
        self._jobs.append(job)
        job.task = asyncio.create_task(self._run(job, None), name=f"muxtui-batch-{job.id}")
        job.task.add_done_callback(_retrieve)  # its error is in `job.error`; never "unretrieved"
        job.task.add_done_callback(lambda _: job.ended())
        return job

    async def run(
        self, spec: BatchSpec, on_progress: ProgressCallback | None = None
    ) -> BatchSummary:
        """Run a batch in the calling task (the command line); raises what the run raises."""
        job = BatchJob(len(self._jobs) + 1, spec)
        self._jobs.append(job)
        return await self._run(job, on_progress)

    async def _run(self, job: BatchJob, on_progress: ProgressCallback | None) -> BatchSummary:
        engine = self._engine

        def publish(progress: BatchProgress) -> None:
            job.publish(progress)
            if on_progress is not None:
                on_progress(progress)
            engine.emit(progress)

        try:
            job.summary = await BatchRun(engine, job.spec, job.id, publish).run()
        except MuxtuiError as exc:
            job.error = str(exc)
            raise
        return job.summary

    async def forward_chat(
        self, model: str, body: Mapping[str, Any], cache_header: str | None = None
    ) -> Reply:
        """Send one chat body as given (model resolved, not streamed), with retries.

        The response cache answers when the body asks for it (`wants_cache`, with the value of
        an `x-muxtui-cache` header); `Reply.cached` says when it did.
        """
        engine = self._engine
        try:
            target = engine.router.resolve(model)
        except UnknownModelError:
            await engine.check_model(model)  # waits for discovery, or raises
            target = engine.router.resolve(model)
        if self._forwarder is None:
            self._forwarder = Forwarder(
                engine.pool,
                engine.router,
                engine.servers,
                engine.retry_policy,
                engine.config.network.max_connections,
                engine.response_cache,
            )
        forwarder = self._forwarder
        route = forwarder.kept_route(target)
        reply_key = None
        if engine.config.response_cache.backend != "off" and wants_cache(body, cache_header):
            reply_key = cache_key(body, await engine.model_identity(model))
            hit = await forwarder.cached(reply_key)
            if hit is not None:  # before a local server is started for it
                return hit
        fields = {name: value for name, value in body.items() if name != "model"}
        await forwarder.learn_model_id(route)
        reply = await forwarder.send(route, model_body(route.model_id, encode_body(fields)))
        if reply_key is not None:
            await forwarder.keep(reply_key, reply)
        return reply

    async def aclose(self) -> None:
        """Cancel running batches and wait for them to close their files."""
        running = [job.task for job in self._jobs if job.task is not None and not job.task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _retrieve(task: asyncio.Task[BatchSummary]) -> None:
    if not task.cancelled():
        task.exception()
