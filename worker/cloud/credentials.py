"""Where the access keys come from, asked for on every request so rotation just works.

Default: the standard Alibaba Cloud chain (`alibabacloud-credentials`: env
`ALIBABA_CLOUD_ACCESS_KEY_ID`/`..._SECRET`/`..._SECURITY_TOKEN`, the credentials file,
the ECS RAM role, OIDC). Explicit keys or a secret file from `[credentials]` are for
local use and the emulator. Objects here never show a secret in `repr` or errors.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..text import one_line
from ..config import ConfigError, CredentialsConfig


@dataclass(frozen=True)
class Credentials:
    """The shape both the MNS SDK and our RPC signer read (get_access_key_id() & co)."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str = field(default="", repr=False)  # "" not None: MNS sends any non-"" token

    def get_access_key_id(self) -> str:
        return self.access_key_id

    def get_access_key_secret(self) -> str:
        return self.access_key_secret

    def get_security_token(self) -> str:
        return self.security_token


class StaticProvider:
    """Fixed keys (config or secret file)."""

    def __init__(self, credentials: Credentials, source: str = "") -> None:
        self._credentials = credentials
        self._source = source

    def get_credentials(self) -> Credentials:
        return self._credentials

    def describe(self) -> str:
        """Where the keys come from (never the secret), for `doctor`."""
        return f"AccessKey {self._credentials.access_key_id} from [credentials]" + \
            (f", secret {self._source}" if self._source else "")

    def __repr__(self) -> str:
        return f"StaticProvider(access_key_id={self._credentials.access_key_id!r})"


class ChainProvider:
    """The standard chain, resolved lazily (the ECS RAM role needs a network call)."""

    RETRY_FAILED_AFTER = 30.0  # seconds: a failed chain is not asked again on every call

    def __init__(self) -> None:
        self._provider = None
        self._failed: tuple[float, str] | None = None
        self._source = ""

    def get_credentials(self) -> Credentials:
        if self._failed and time.monotonic() - self._failed[0] < self.RETRY_FAILED_AFTER:
            raise CredentialsError(self._failed[1])
        if self._provider is None:
            from alibabacloud_credentials.provider import DefaultCredentialsProvider

            _quiet_library_logger()
            self._provider = DefaultCredentialsProvider()
            _quiet_library_logger()  # providers imported by the constructor add more
        try:
            c = self._provider.get_credentials()
        except Exception as exc:  # the library's messages name sources, never secrets
            message = one_line(f"no credentials from the default chain: {one_line(exc)}")
            self._failed = (time.monotonic(), message)
            raise CredentialsError(message) from None
        self._failed = None
        self._source = str(getattr(c, "get_provider_name", lambda: "")() or "")
        return Credentials(c.get_access_key_id(), c.get_access_key_secret(), c.get_security_token() or "")

    def describe(self) -> str:
        """Which source of the chain answered (after a successful `get_credentials`), for `doctor`."""
        return "the default credentials chain" + (f" ({self._source})" if self._source else "")

    def __repr__(self) -> str:
        return "ChainProvider()"


def _quiet_library_logger() -> None:
    # alibabacloud-credentials modules give their logger stderr handlers (at import, some
    # imported lazily) that print each failed source with a traceback; our one-line
    # CredentialsError says enough.
    import importlib

    for name in ("refreshable", "ecs_ram_role", "oauth", "external"):
        try:
            importlib.import_module(f"alibabacloud_credentials.provider.{name}")
        except ImportError:
            pass
    lib_log = logging.getLogger("credentials")
    lib_log.handlers[:] = [logging.NullHandler()]  # no handler at all would mean logging.lastResort
    lib_log.propagate = False


class CredentialsError(RuntimeError):
    pass


def credentials_provider(cfg: CredentialsConfig):
    """The provider `[credentials]` asks for: explicit keys, a secret file, or the chain."""
    if not cfg.explicit:
        return ChainProvider()
    secret, source = cfg.access_key_secret, "in the config file"
    if cfg.access_key_secret_file:
        secret, path = read_secret_file(cfg.access_key_secret_file, "[credentials] access_key_secret_file")
        source = f"from {path}"
    return StaticProvider(Credentials(cfg.access_key_id, secret, cfg.security_token), source)


def _bare(name: str) -> bool:
    return os.sep not in name and (not os.altsep or os.altsep not in name)


def secret_path(name: str) -> Path:
    """A secret file's path: a bare name (no directory) is looked up in `$CREDENTIALS_DIRECTORY`
    when systemd set it (`LoadCredential=`), so a config can say `secret_file = "secret"`."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and _bare(name):
        return Path(directory) / name
    return Path(name).expanduser()


def deferred(name: str) -> bool:
    """A bare name only systemd's `$CREDENTIALS_DIRECTORY` can resolve, in a shell where it is not
    set (`check-config` run by hand): the service reads it when it starts."""
    return _bare(name) and not os.environ.get("CREDENTIALS_DIRECTORY") and not Path(name).exists()


def read_secret_file(name: str, key: str) -> tuple[str, Path]:
    """(the stripped text, the path read); `ConfigError` naming `key` if unreadable or empty."""
    path = secret_path(name)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        hint = " (a bare name is read from $CREDENTIALS_DIRECTORY, which is not set here)" \
            if deferred(name) else ""
        raise ConfigError(f"{key}: cannot read {path}: {why}{hint}") from None
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret, path
