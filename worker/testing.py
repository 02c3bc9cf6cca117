"""Test kit for ecs-worker and its plugin authors (pytest plugin via the pytest11 entry point)."""
