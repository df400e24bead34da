"""The muxtui full-screen app, its panes, widgets and the bridge from engine events."""
