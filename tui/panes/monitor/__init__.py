"""The Monitor pane (F4): live memory, CPU and GPU graphs, model rows and alerts."""
