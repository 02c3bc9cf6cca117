"""The webhook plugin's configuration: `[plugins.webhook]` and its `[[targets]]`."""
from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ecs_worker import (
    FAILED, DEFERRED, HANDLED, IGNORED, INVALID, ConfigError, read_secret_file, secret_file_deferred,
    setting,
)

from .http_post import redact

FORMATS = ("json", "dingtalk", "slack")
OUTCOMES = (HANDLED, FAILED, IGNORED, INVALID, DEFERRED)


@dataclass(frozen=True)
class Target:
    url: str = setting("", doc="http:// or https:// URL; may carry a token (never logged)")
    url_file: str = setting("", doc="read the URL from this file (bare name: in $CREDENTIALS_DIRECTORY)")
    format: str = setting("json", choices=FORMATS)
    events: list[str] = setting(["*"], doc="event-name patterns (fnmatch, case-sensitive)")
    outcomes: list[str] = setting(["handled", "failed", "invalid", "deferred"])
    secret: str = setting("", secret=True, doc="DingTalk signing secret (SEC...)")
    secret_file: str = setting("", doc="read the DingTalk secret from this file (bare name: in $CREDENTIALS_DIRECTORY)")
    name: str = setting("", doc="label in logs; default: the URL's host")

    def __post_init__(self) -> None:
        for key, file_key in (("url", "url_file"), ("secret", "secret_file")):
            name = getattr(self, file_key)
            if name:
                if getattr(self, key):
                    raise ConfigError(f"{key} and {file_key} are exclusive")
                if secret_file_deferred(name):  # check-config in a shell: systemd hands the file to the service
                    continue
                text, _ = read_secret_file(name, file_key)
                object.__setattr__(self, key, text)
        if not self.url and not self.url_file:
            raise ConfigError("url: required (or url_file)")
        if self.url:
            self._check_url()
        unknown = [o for o in self.outcomes if o not in OUTCOMES]
        if unknown:
            raise ConfigError(f"outcomes: {unknown[0]!r} is not one of {', '.join(OUTCOMES)}")
        if not self.events:
            raise ConfigError("events: an empty list matches nothing; remove the target instead")
        if (self.secret or self.secret_file) and self.format != "dingtalk":
            raise ConfigError("secret: only DingTalk targets are signed")

    def resolved(self) -> "Target":
        """This target with the files deferred at parse time read now (at start-up, under
        systemd); `ConfigError` naming the key if one cannot be read."""
        changes = {}
        for key, file_key in (("url", "url_file"), ("secret", "secret_file")):
            if getattr(self, file_key) and not getattr(self, key):
                changes[key], _ = read_secret_file(getattr(self, file_key), file_key)
                changes[file_key] = ""
        return dataclasses.replace(self, **changes) if changes else self

    def _check_url(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL itself is not echoed: it may hold a token.
            raise ConfigError("url: must be an http:// or https:// URL with a host")
        try:
            parts.port
        except ValueError:
            raise ConfigError("url: invalid port") from None

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return f"Target({self.label!r}, format={self.format!r})"

    @property
    def label(self) -> str:
        return self.name or redact(self.url)

    def wants(self, event_name: str, outcome: str) -> bool:
        return outcome in self.outcomes and any(fnmatchcase(event_name, p) for p in self.events)


@dataclass(frozen=True)
class Config:
    targets: list[Target] = setting([], doc="[[plugins.webhook.targets]] tables")
    timeout: float = setting(5.0, min=0.1, max=120, doc="seconds per connect / read")
    retries: int = setting(3, min=0, max=20, doc="further tries after the first fails")
    backoff: float = setting(1.0, min=0, max=60, doc="first retry delay; doubles per retry")
    queue_size: int = setting(1000, min=1, max=100000, doc="per target; the oldest is dropped")
    drain_timeout: float = setting(10.0, min=0, max=600, doc="seconds to flush on shutdown")
