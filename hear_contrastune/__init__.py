"""hear-contrastune."""
