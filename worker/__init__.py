"""ecs-worker: automate Alibaba Cloud ECS system events from an MNS queue with pluggy plugins.

Plugin authors need two names: `hookimpl` (the marker) and `Event` (what hooks receive).
"""
from .events import Event, InvalidEvent, parse_event
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Event", "InvalidEvent", "hookimpl", "parse_event", "__version__"]
