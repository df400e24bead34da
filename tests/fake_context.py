"""The test server's context-window mode: a word tokenizer, a chat template and llama-server's
answers about context (`/props`, `/tokenize`, `/apply-template`, the 400 for a prompt too long).

One token is one whitespace-separated word. The template wraps each message as
`<role> CONTENT <end>` and ends with `<assistant>`; tokenizing with `add_special` adds `<bos>`.
So a request costs: the words of every message + 2 per message + 2 (`<bos>`, `<assistant>`).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

TEMPLATE_PER_MESSAGE = 2  # <role> and <end>
TEMPLATE_PER_REQUEST = 2  # <bos> and <assistant>
ARCHITECTURE = "llama"


def words(text: str) -> list[str]:
    """The fake tokenizer's pieces."""
    return text.split()


def token_ids(text: str, add_special: bool) -> list[int]:
    """Stable ids for the words of `text` (a `<bos>` id first with `add_special`)."""
    ids = [zlib.crc32(word.encode()) % 100_000 + 10 for word in words(text)]
    return [2, *ids] if add_special else ids


def message_text(message: Any) -> str:
    """A message's content as text (multimodal parts joined)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def render(messages: Any) -> str:
    """The prompt the template makes of `messages` (what `/apply-template` answers)."""
    parts = [
        f"<{m.get('role', 'user')}> {message_text(m)} <end>"
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    ]
    return " ".join([*parts, "<assistant>"])


def templated_tokens(messages: Any) -> int:
    """Prompt tokens of a chat request as the context check and usage count them."""
    return len(token_ids(render(messages), add_special=True))


def context_exceeded(n_prompt: int, n_ctx: int) -> bytes:
    """llama-server's 400 body for a prompt that does not fit its context."""
    message = (
        f"request ({n_prompt} tokens) exceeds the available context size ({n_ctx} tokens), "
        "try increasing it"
    )
    error = {
        "code": 400,
        "message": message,
        "type": "exceed_context_size_error",
        "n_prompt_tokens": n_prompt,
        "n_ctx": n_ctx,
    }
    return json.dumps({"error": error}).encode()


def props(n_ctx: int, total_slots: int | None = None) -> dict[str, Any]:
    """llama-server's `GET /props`, the parts muxtui reads."""
    settings = {"n_ctx": n_ctx, "params": {}}
    return {"default_generation_settings": settings, "total_slots": total_slots or 1}


def ollama_show(context_length: int | None, num_ctx: int | None) -> dict[str, Any]:
    """Ollama's `POST /api/show`: the model's trained context and any `num_ctx` parameter."""
    info: dict[str, Any] = {"general.architecture": ARCHITECTURE}
    if context_length is not None:
        info[f"{ARCHITECTURE}.context_length"] = context_length
    parameters = f'num_ctx                        {num_ctx}\nstop                           "<end>"'
    return {
        "modelfile": "# fake",
        "parameters": parameters if num_ctx is not None else 'stop "<end>"',
        "template": "{{ .Prompt }}",
        "details": {"format": "gguf", "family": ARCHITECTURE},
        "model_info": info,
    }
