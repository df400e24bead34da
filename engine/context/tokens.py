"""Counting a conversation's tokens: the server's own tokenizer where it has one (llama-server's
`/tokenize`), else a documented estimate that errs high; both plus the chat template's tokens.

Counts are cached per model and message text, so a long conversation is tokenized once; a turn
asks the server only about the newest messages it has not seen, and only as far back as the
context can reach.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from muxtui.engine.events import ChatMessage

log = logging.getLogger(__name__)

# The estimate counts these pieces, one token each: a run of up to 5 ASCII letters; each other
# visible ASCII character (digits and punctuation: tokenizers split them finely); a run of up to
# 3 accented, Cyrillic, Greek ... letters; each CJK character or emoji; each newline and each run
# of 2+ spaces. Against Gemma's tokenizer it errs high on prose (x1.04-1.4), code (x1.2),
# Markdown and JSON (x1.3), CJK (x1.9), Cyrillic and Greek (x1.05-1.15) and low on digit runs
# (x0.92), whitespace art (x0.89) and random base64 (x0.67): hence ESTIMATE_MARGIN, and the one
# retry after a rejection.
_PIECE = re.compile(r"[A-Za-z]{1,5}|[\u00c0-\u2e7f]{1,3}|\S|\s{2,}|\n")
ESTIMATE_MARGIN = 0.10  # an estimated fit leaves this share of the prompt space unused
TOKENIZER_MARGIN = 0.02  # a tokenized message can merge differently inside the template
# Template tokens when the server cannot show its template: role markers and separators per
# message (ChatML, Llama 3, Gemma: 4-6), BOS and the reply's opening marker per request.
MESSAGE_OVERHEAD = 8
REQUEST_OVERHEAD = 16
_CACHE_ENTRIES = 100_000  # counts kept per model (an int and a small key each)
_TOKENIZE_BATCH = 8  # /tokenize requests in flight at once
# /tokenize requests one turn may send: a big window over a long conversation is tokenized
# over several turns (the estimate stands in meanwhile) instead of delaying the first reply.
TOKENIZE_PER_TURN = 64
_TOKENIZE_TIMEOUT = 10.0
_PROBE_TEXT = "Hello"

CountedBy = Literal["tokenizer", "estimate"]


def estimate_tokens(text: str) -> int:
    """A token count for `text` that errs high for most text (see `_PIECE`)."""
    return len(_PIECE.findall(text))


def counting_margin(counted_by: CountedBy) -> float:
    """The share of the prompt space a fit leaves unused for what its counting may miss."""
    return TOKENIZER_MARGIN if counted_by == "tokenizer" else ESTIMATE_MARGIN


@dataclass(frozen=True)
class TemplateOverhead:
    """Tokens the chat template adds: per message, and once per request."""

    per_message: int = MESSAGE_OVERHEAD
    per_request: int = REQUEST_OVERHEAD
    measured: bool = False  # read from the server's own template, not the defaults


DEFAULT_OVERHEAD = TemplateOverhead()


class MessageCounts:
    """Content tokens per message text for one model, by whichever method counted them."""

    def __init__(self, overhead: TemplateOverhead = DEFAULT_OVERHEAD) -> None:
        self.overhead = overhead
        # (hash, length) of the text: the text itself is not kept; a collision needs two texts
        # of one length with one 64-bit hash.
        self._cache: OrderedDict[tuple[int, int, bool], int] = OrderedDict()

    def count(self, message: ChatMessage) -> int:
        """Tokens `message` takes in a request, template included."""
        return self.content_tokens(message.content) + self.overhead.per_message

    def content_tokens(self, text: str) -> int:
        """Tokens of `text`: the tokenizer's count if known, else the estimate."""
        tokenized = self._cache.get((hash(text), len(text), True))
        if tokenized is not None:
            return tokenized
        key = (hash(text), len(text), False)
        estimated = self._cache.get(key)
        if estimated is None:
            estimated = self._store(key, estimate_tokens(text))
        return estimated

    def known(self, text: str) -> bool:
        """Whether the tokenizer has counted `text`."""
        return (hash(text), len(text), True) in self._cache

    def learn(self, text: str, tokens: int) -> None:
        """Keep the tokenizer's count for `text`."""
        self._store((hash(text), len(text), True), tokens)

    def _store(self, key: tuple[int, int, bool], tokens: int) -> int:
        cache = self._cache
        cache[key] = tokens
        if len(cache) > _CACHE_ENTRIES:
            cache.popitem(last=False)
        return tokens


class ServerTokenizer:
    """llama-server's `/tokenize` and `/apply-template` at one server root."""

    def __init__(self, client: httpx.AsyncClient, root_url: str) -> None:
        self.client = client
        self.root_url = root_url.rstrip("/")

    async def tokenize(self, text: str, add_special: bool = False) -> int:
        """The number of tokens the server's tokenizer makes of `text`."""
        body = {"content": text, "add_special": add_special}
        reply = await self._post("/tokenize", body)
        tokens = reply.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError("no token list in the /tokenize reply")
        return len(tokens)

    async def overhead(self) -> TemplateOverhead | None:
        """The template's tokens measured with `/apply-template`; None where it cannot tell."""

        def turn(role: str) -> dict[str, str]:
            return {"role": role, "content": _PROBE_TEXT}

        probes = (
            [turn("user")],
            [turn("user"), turn("assistant"), turn("user")],
            [turn("system"), turn("user")],
        )
        rendered = []
        for messages in probes:
            try:
                reply = await self._post("/apply-template", {"messages": messages})
            except httpx.HTTPStatusError:  # older servers: no /apply-template
                return None
            prompt = reply.get("prompt")
            if not isinstance(prompt, str) or prompt.count(_PROBE_TEXT) != len(messages):
                # The template drops or garbles messages: the model would not see the chat.
                log.warning("the chat template at %s does not render the messages", self.root_url)
                return None
            rendered.append(prompt)
        content = await self.tokenize(_PROBE_TEXT)
        one, three, with_system = [
            await self.tokenize(prompt, add_special=True) - content * len(probe)
            for prompt, probe in zip(rendered, probes, strict=True)
        ]
        per_message = max(-(-(three - one) // 2), with_system - one, 1)
        per_request = one - per_message
        if per_request < 0:
            return None
        return TemplateOverhead(per_message, per_request, measured=True)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(
            f"{self.root_url}{path}", json=body, timeout=_TOKENIZE_TIMEOUT
        )
        response.raise_for_status()
        reply = response.json()
        if not isinstance(reply, dict):
            raise ValueError(f"{path} did not answer a JSON object")
        return reply


async def count_newest(
    tokenizer: ServerTokenizer,
    counts: MessageCounts,
    newest_first: Sequence[ChatMessage],
    budget: int | None,
    max_calls: int = TOKENIZE_PER_TURN,
) -> bool:
    """Tokenize messages newest first until their tokens pass `budget` (None: all of them).

    Returns whether every message up to there was tokenized; False when `max_calls` ran out
    first (the rest keep their estimate until a later turn).
    """
    used = 0
    position = 0
    calls = 0
    while position < len(newest_first) and (budget is None or used <= budget):
        batch = newest_first[position : position + _TOKENIZE_BATCH]
        position += len(batch)
        texts = list(dict.fromkeys(m.content for m in batch if not counts.known(m.content)))
        if calls + len(texts) > max_calls:
            return False
        calls += len(texts)
        found = await asyncio.gather(*(tokenizer.tokenize(text) for text in texts))
        for text, tokens in zip(texts, found, strict=True):
            counts.learn(text, tokens)
        used += sum(counts.count(m) for m in batch)
    return True
