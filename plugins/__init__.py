"""The built-in plugins. Each is registered exactly like a third-party plugin (see manager.py)
and imports only what a third-party plugin can: the top-level `ecs_worker` API, `ctx`, and its
own package (`lb` holds the load-balancer helpers `slb` and `maintenance` share)."""
