"""`[worker] store`, the shared state store's URL: which schemes the worker opens, the rules a
configured URL must meet (`check_store_url`, called by the start-up checks —
operations/startup_checks.py — and when the store is opened, state/store_open.py), and how
the URL may be shown in logs (`shown`)."""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .sections import ConfigError

if TYPE_CHECKING:
    from . import Config

STORE_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")  # [worker] store


def check_store_url(config: Config) -> None:
    """`[worker] store`: empty, or a URL of a known scheme without a password in it."""
    url = config.worker.store
    parts = urlsplit(url)
    if url and parts.scheme not in STORE_SCHEMES:
        raise ConfigError(f"{config.path}: [worker] store: use one of "
                          f"{', '.join(s + '://' for s in STORE_SCHEMES)} (or empty for SQLite)")
    if parts.password:
        raise ConfigError(f"{config.path}: [worker] store: no password in the URL; use store_password_file")


def shown(url: str) -> str:
    """The URL as logs may show it: without user and password."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
