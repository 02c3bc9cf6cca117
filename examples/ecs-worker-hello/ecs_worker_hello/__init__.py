"""An example third-party plugin, installed through the `ecs_worker` entry point.

It greets every maintenance event: a template for your own plugin package.
"""
from ecs_worker import hookimpl

seen: list[str] = []


@hookimpl
def on_event(event, ctx):
    """Record maintenance events; let everything else pass."""
    if not event.name.startswith("Instance:SystemMaintenance"):
        return None
    seen.append(event.instance_id or "")
    ctx.log.info("hello: maintenance %s for %s", event.name, event.instance_id)
    return "noted"
