"""The Engine's batch methods (a mixin of the facade, kept beside the batch runner)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from muxtui.engine.batch.forward import Reply
    from muxtui.engine.batch.jobs import BatchJob, BatchJobs
    from muxtui.engine.batch.runner import BatchSpec, BatchSummary
    from muxtui.engine.events import BatchProgress


class BatchMixin:
    """Batch runs in the background or to their end, and one chat body forwarded as given."""

    @functools.cached_property
    def batches(self) -> BatchJobs:
        """This engine's batch runs: start, watch, cancel (the Batch pane, `muxtui batch`)."""
        from muxtui.engine.batch.jobs import BatchJobs
        from muxtui.engine.core import Engine

        assert isinstance(self, Engine)
        return BatchJobs(self)

    def start_batch(self, spec: BatchSpec) -> BatchJob:
        """Start a batch in the background; the handle gives its progress and cancels it."""
        return self.batches.start(spec)

    async def run_batch(
        self, spec: BatchSpec, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> BatchSummary:
        """Run a batch to its end in the calling task; cancelling the task stops it cleanly."""
        return await self.batches.run(spec, on_progress)

    async def forward_chat(
        self, model: str, body: Mapping[str, Any], cache_header: str | None = None
    ) -> Reply:
        """Send one chat body as given, not streamed, to `model` with retries; the reply as sent.

        A body with temperature 0 or a seed (or `cache_header` "force") is answered from the
        response cache when it can be ("no-store" skips it); `Reply.cached` says so.
        """
        return await self.batches.forward_chat(model, body, cache_header)
