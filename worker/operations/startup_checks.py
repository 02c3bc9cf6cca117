"""The start-up checks `run`, `check-config` and `doctor` share: what a config needs beyond
being well-formed, checked once, in the same words. A config that passed `check-config` and
then exited 2 under systemd's RestartPreventExitStatus=2 would leave the service down, so
`run` calls exactly these before it starts, and `doctor` prints each as a line.

Each check answers a `Finding` (proven, or not provable here and why) or raises `ConfigError`
naming the file and key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Config, ConfigError, check_store_url


@dataclass(frozen=True)
class Finding:
    proven: bool  # False: not provable here (said why), which is not a failure
    text: str


def check_runnable(config: Config) -> None:
    """What `run` needs of `[mns] endpoint` and `[worker] store` (config/store_url.py) beyond a
    well-formed file. `run`, `check-config` and `doctor` all reach it through `mns_endpoint`,
    so check-config accepts exactly what run accepts (a config that passed and then exited 2
    under systemd's RestartPreventExitStatus=2 would leave the service down)."""
    endpoint = config.mns.endpoint
    if not endpoint:
        raise ConfigError(f"{config.path}: [mns] endpoint: required "
                          "(https://<account-id>.mns.<region>.aliyuncs.com)")
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(f"{config.path}: [mns] endpoint: must start with https:// (http:// only for a "
                          f"local emulator), got {endpoint!r}")
    check_store_url(config)


def mns_endpoint(config: Config) -> Finding:
    check_runnable(config)
    return Finding(True, f"[mns] endpoint: {config.mns.endpoint}")


def secret(config: Config) -> Finding:
    """The secret file is read as `run` reads it (systemd's credential only under the service)."""
    from ..cloud.credentials import credentials_provider, resolved_by_systemd_only

    secret_file = config.credentials.access_key_secret_file
    if secret_file and resolved_by_systemd_only(secret_file):
        return Finding(False, f"[credentials] access_key_secret_file {secret_file!r}: read from "
                              "$CREDENTIALS_DIRECTORY when the service starts (systemd LoadCredential=); "
                              "not set here, so not checked")
    provider = credentials_provider(config.credentials)
    describe = getattr(provider, "describe", lambda: type(provider).__name__)
    return Finding(True, f"credentials: {describe()}")


def state_dir(config: Config) -> Finding:
    """What the store needs of `[worker] state_dir` (store.py): a directory this user may
    create, or write and enter, with its files readable and writable. Creates nothing: a
    check run as root must not leave root's files where the service's user needs its own."""
    from ..state.store import DB_NAME, DEAD_LETTER_NAME

    path = Path(config.worker.state_dir).expanduser()
    where = f"{config.path}: [worker] state_dir {str(path)!r}"
    user = f"this user (uid {os.geteuid()})"
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{where}: not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: not writable by {user}")
        for name in (DB_NAME, DEAD_LETTER_NAME):
            if (path / name).exists() and not os.access(path / name, os.R_OK | os.W_OK):
                raise ConfigError(f"{where}: {name} is not readable and writable by {user}")
        return Finding(True, f"state_dir {path}: usable by {user}")
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot be created: {parent} is not writable by {user}")
    return Finding(True, f"state_dir {path}: will be created (0700) in {parent} by {user}")


# In order: a later check may rely on an earlier one. Extend here, and all three commands do.
CHECKS: tuple[Callable[[Config], Finding], ...] = (mns_endpoint, secret, state_dir)


def check_all(config: Config) -> list[Finding]:
    """Every start-up check in order; the first that fails raises `ConfigError`."""
    return [check(config) for check in CHECKS]
