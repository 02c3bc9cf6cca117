"""The trust boundary: the fleet key that signs what the worker writes for itself, and what a
re-sent deferral may make the worker do."""
