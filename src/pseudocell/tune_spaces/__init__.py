"""tune_spaces."""
