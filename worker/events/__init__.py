"""Events: bytes off the queue in, one typed `Event` out; message keys; the deferral wrapper.

`ecs_worker.events.parse_event` and `InvalidEvent` are public names (docs/plugins.md).
"""
from .body import InvalidEvent
from .event import PREEMPTIBLE_INTERRUPTION, STATE_CHANGE, Event, parse_event

__all__ = ["Event", "InvalidEvent", "parse_event", "PREEMPTIBLE_INTERRUPTION", "STATE_CHANGE"]
