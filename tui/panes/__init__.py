"""The app's panes, one folder each."""
