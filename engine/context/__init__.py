"""The context window: each model's length, token counts, and fitting a conversation into it.

The turn pipeline calls `ContextFitter.fit` before sending, emits the `ContextFitted` event it
returns, and after a rejection that `context_overflow` recognises calls `ContextFitter.refit`
for exactly one retry.
"""

from muxtui.engine.context.fit import (
    ContextTooSmallError,
    FitResult,
    fit_messages,
    split_conversation,
)
from muxtui.engine.context.fitter import ContextFitter, TurnFit
from muxtui.engine.context.overflow import ContextOverflow, context_overflow
from muxtui.engine.context.tokens import estimate_tokens
from muxtui.engine.context.window import ContextWindow, ModelRef
from muxtui.engine.events import ContextFitted

__all__ = [
    "ContextFitted",
    "ContextFitter",
    "ContextOverflow",
    "ContextTooSmallError",
    "ContextWindow",
    "FitResult",
    "ModelRef",
    "TurnFit",
    "context_overflow",
    "estimate_tokens",
    "fit_messages",
    "split_conversation",
]
