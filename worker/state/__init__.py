"""The worker's memory across restarts: the store and the local dead-letter record."""
