"""Built-in `scaling` plugin (in progress)."""
