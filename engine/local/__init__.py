"""Local model servers that muxtui starts and keeps warm."""
