"""One module per wire protocol."""
