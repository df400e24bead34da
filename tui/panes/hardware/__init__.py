"""The Hardware pane (F5): detected hardware, per-model fit, the what-if, applying flags."""
