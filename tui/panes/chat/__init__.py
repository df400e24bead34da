"""The Chat pane: conversations, the model picker, settings, streamed replies."""
