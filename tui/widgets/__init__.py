"""Reusable widgets of the muxtui app."""
