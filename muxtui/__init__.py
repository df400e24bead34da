"""muxtui: the command line that sits above the engine and the TUI."""

__version__ = "0.1.0"
