"""What `run` needs beyond a well-formed config file: the rules behind the start-up checks
(operations/startup_checks.py), which `run`, `check-config` and `doctor` all call, so
check-config accepts exactly what run accepts (a config that passed and then exited 2 under
systemd's RestartPreventExitStatus=2 would leave the service down). `check_store_url` is also
what opening the store checks (state/store_open.py), and `shown` how its URL is logged."""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .config_text import ConfigError

if TYPE_CHECKING:
    from . import Config

STORE_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")  # [worker] store


def check_runnable(config: Config) -> None:
    """Raises `ConfigError` naming the file, section and key."""
    endpoint = config.mns.endpoint
    if not endpoint:
        raise ConfigError(f"{config.path}: [mns] endpoint: required "
                          "(https://<account-id>.mns.<region>.aliyuncs.com)")
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(f"{config.path}: [mns] endpoint: must start with https:// (http:// only for a "
                          f"local emulator), got {endpoint!r}")
    check_store_url(config)


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
