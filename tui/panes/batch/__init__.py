"""The Batch pane (F6)."""
