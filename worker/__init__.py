"""ecs-worker: automate Alibaba Cloud ECS system events from an MNS queue with pluggy plugins.

The public API — what a plugin may import, the built-ins included — is what this package
exports, plus the test kit `ecs_worker.testing`; everything else is internal and may change.
A plugin reaches the worker only through `ctx` (docs/plugins.md).
"""
from .backoff import backoff_delay
from .cloud.errors import CloudError
from .config import ConfigError, setting
from .cloud.credentials import deferred as secret_file_deferred, read_secret_file
from .events.event import Event, InvalidEvent, parse_event
from .plugin_host.hookspecs import hookimpl
from .events.wrapper import RESUME_STATE
from .plugin_host.outcomes import DEFERRED, FAILED, HANDLED, IGNORED, INVALID, PluginResult, Result
from .text import one_line
from .version import __version__


def counter(name: str, documentation: str, labelnames: tuple[str, ...] | list[str] = ()):
    """A Prometheus counter on the worker's `/metrics` registry, for a plugin's own numbers.
    Create it once (at import); `name` without `_total`, as prometheus_client wants."""
    from prometheus_client import Counter

    from .observability.metrics import REGISTRY  # prometheus_client is slow to import: only when asked

    return Counter(name, documentation, list(labelnames), registry=REGISTRY)


__all__ = [
    "Event", "InvalidEvent", "hookimpl", "parse_event", "setting", "ConfigError", "CloudError",
    "HANDLED", "FAILED", "IGNORED", "INVALID", "DEFERRED", "PluginResult", "Result", "RESUME_STATE",
    "backoff_delay", "counter", "one_line", "read_secret_file", "secret_file_deferred", "__version__",
]
