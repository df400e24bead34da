"""The Models pane: every model with its state, local server actions, the live server log."""
