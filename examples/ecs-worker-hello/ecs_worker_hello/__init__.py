"""An example third-party plugin, installed through the `ecs_worker` entry point.

It greets every maintenance event and remembers which instances it greeted: a template for
your own plugin package. Its state lives on the object, created in `on_startup`, as
docs/plugins.md advises: each registration (the worker's, each test's) owns its own.
"""
from __future__ import annotations

from ecs_worker import hookimpl


class HelloPlugin:
    """Registered as `hello` (its entry point's name): in logs, config and the test harness."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def on_startup(self, ctx):
        self.seen = []

    @hookimpl
    def on_event(self, event, ctx):
        """Record maintenance events; say why everything else passes."""
        if not event.name.startswith("Instance:SystemMaintenance"):
            return ctx.skip("greets maintenance events only")
        self.seen.append(event.instance_id or "")
        ctx.log.info("hello: maintenance %s for %s", event.name, event.instance_id)
        return "noted"
