"""The muxtui engine: config, backends, warm local servers and history, with no UI.

Kept import-light on purpose: importing `engine` pulls in nothing but the standard library.
"""
