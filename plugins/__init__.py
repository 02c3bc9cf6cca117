"""The built-in plugins. Each is registered exactly like a third-party plugin (see manager.py)
and imports only what a third-party plugin can: the top-level `ecs_worker` API, `ctx`, and its
own package (`lb` holds the load-balancer helpers `slb` and `maintenance` share).

A new built-in is added in one place: its folder here plus its line in `DEFAULT_PLUGINS`
(`plugin_host/manager.py`); a folder of shared code is named in `HELPER_PACKAGES` beside it.
Packaging follows from the folder (setup.py); tests/test_plugins.py notices a folder in neither."""
