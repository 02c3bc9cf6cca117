"""Where the access keys come from, asked for on every request so rotation just works.

Default: the standard Alibaba Cloud chain (`alibabacloud-credentials`: env
`ALIBABA_CLOUD_ACCESS_KEY_ID`/`..._SECRET`/`..._SECURITY_TOKEN`, the credentials file,
the ECS RAM role, OIDC). Explicit keys or a secret file from `[credentials]` are for
local use and the emulator. Objects here never show a secret in `repr` or errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, CredentialsConfig


@dataclass(frozen=True)
class Credentials:
    """The shape both the MNS SDK and our RPC signer read (get_access_key_id() & co)."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def get_access_key_id(self) -> str:
        return self.access_key_id

    def get_access_key_secret(self) -> str:
        return self.access_key_secret

    def get_security_token(self) -> str | None:
        return self.security_token


class StaticProvider:
    """Fixed keys (config or secret file)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def get_credentials(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticProvider(access_key_id={self._credentials.access_key_id!r})"


class ChainProvider:
    """The standard chain, resolved lazily (the ECS RAM role needs a network call)."""

    def __init__(self) -> None:
        self._provider = None

    def get_credentials(self) -> Credentials:
        if self._provider is None:
            from alibabacloud_credentials.provider import DefaultCredentialsProvider

            self._provider = DefaultCredentialsProvider()
        try:
            c = self._provider.get_credentials()
        except Exception as exc:  # the library's messages name sources, never secrets
            raise CredentialsError(f"no credentials from the default chain: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        return Credentials(c.get_access_key_id(), c.get_access_key_secret(), c.get_security_token())

    def __repr__(self) -> str:
        return "ChainProvider()"


class CredentialsError(RuntimeError):
    pass


def credentials_provider(cfg: CredentialsConfig):
    """The provider `[credentials]` asks for: explicit keys, a secret file, or the chain."""
    if not cfg.explicit:
        return ChainProvider()
    secret = cfg.access_key_secret
    if cfg.access_key_secret_file:
        path = Path(cfg.access_key_secret_file)
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[credentials] access_key_secret_file: cannot read {path}: "
                              f"{exc.strerror}") from None
        if not secret:
            raise ConfigError(f"[credentials] access_key_secret_file: {path} is empty")
    return StaticProvider(Credentials(cfg.access_key_id, secret, cfg.security_token or None))
