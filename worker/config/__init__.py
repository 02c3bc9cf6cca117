"""Configuration: TOML in, validated frozen dataclasses out.

Each section is a dataclass; its fields, types, defaults and ranges are the schema.
Plugins declare theirs the same way (a `Config` dataclass on the plugin) and get
`[plugins.<name>]` checked by the same code (`config/sections.py`). Every error names file,
section and key.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The checking of typed sections (sections.py); ConfigError and setting are imported from here too.
from .sections import ConfigError, build_section, quoted, setting, toml_name
from .store_url import STORE_SCHEMES, check_store_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


MAX_CONFIG_BYTES = 1024 * 1024  # a config file is a few KiB; refuse to parse a huge one


@dataclass(frozen=True)
class MnsConfig:
    endpoint: str = setting("", doc="https://<account-id>.mns.<region>.aliyuncs.com")
    queue: str = setting("ecs-events")
    wait_seconds: int = setting(20, min=1, max=30)
    batch_size: int = setting(16, min=1, max=16)
    gather_seconds: float = setting(0.1, min=0, max=1,
                                    doc="longest pause before the next receive while messages "
                                        "trickle in, so each receive and delete carries more; 0 = none")
    dead_letter_queue: str = setting("")
    visibility_timeout: int = setting(60, min=10, max=43200,
                                      doc="how long a received message stays hidden while handled")


@dataclass(frozen=True)
class CloudConfig:
    region: str = setting("cn-hangzhou")
    endpoint: str = setting("")
    protocol: str = setting("https", choices=("https", "http"))
    connect_timeout: float = setting(5.0, min=0.1, max=60)
    read_timeout: float = setting(10.0, min=0.1, max=120)
    max_retries: int = setting(6, min=0, max=20)
    ecs_rps: float = setting(20.0, min=0.1, max=1000, doc="client-side ECS call rate")
    slb_rps: float = setting(20.0, min=0.1, max=1000, doc="client-side SLB call rate")
    alb_rps: float = setting(20.0, min=0.1, max=1000, doc="client-side ALB call rate")
    nlb_rps: float = setting(20.0, min=0.1, max=1000, doc="client-side NLB call rate")


@dataclass(frozen=True)
class CredentialsConfig:
    access_key_id: str = setting("")
    access_key_secret: str = setting("", secret=True)
    access_key_secret_file: str = setting("")
    security_token: str = setting("", secret=True)

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        return f"CredentialsConfig(access_key_id={self.access_key_id!r}, secret=***)"

    @property
    def explicit(self) -> bool:
        return bool(self.access_key_id)


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = setting(8, min=1, max=256)
    max_attempts: int = setting(5, min=1, max=100)
    max_pending: int = setting(1000, min=1, max=100000,
                               doc="messages held while plugins finish asynchronous work")
    state_dir: str = setting("/var/lib/ecs-worker")
    shutdown_timeout: float = setting(30.0, min=0, max=3600)
    dry_run: bool = setting(False)
    dedupe_ttl: int = setting(86400, min=0, max=30 * 86400)
    retry_base_seconds: float = setting(10.0, min=1, max=3600,
                                        doc="first backoff after a failed attempt; doubles per attempt")
    retry_max_seconds: float = setting(900.0, min=1, max=43200, doc="longest backoff after a failure")
    archive: str = setting("", doc="append every received body to this JSON Lines file")
    resend_deferrals_after: float = setting(600.0, min=60, max=43200,
                                            doc="a longer deferral re-sends the message with a "
                                                "delay instead of holding it")
    store: str = setting("", doc='"" = SQLite in state_dir; "redis://host:6379/0" (or rediss://, '
                                 'redis+sentinel://, redis+cluster://) = shared by every worker using it')
    store_password_file: str = setting("", doc="the shared store's password (a bare name: $CREDENTIALS_DIRECTORY)")
    store_fleet: str = setting("", doc="the shared store's key namespace (hash tag); empty = the queue's name")
    signing_key_file: str = setting("", doc="the fleet key signing what re-sent deferrals carry (signing.py)")


@dataclass(frozen=True)
class PluginsConfig:
    load: list[str] = setting([])
    disabled: list[str] = setting([])
    call_timeout: float = setting(60.0, min=0, max=3600, doc="seconds per hook call; 0 = none")
    max_calls_per_plugin: int = setting(16, min=1, max=1024, doc="threads each plugin's calls may use at once")
    stuck_health_seconds: float = setting(60.0, min=0, max=86400, doc="/healthz 503: a plugin's threads all stuck")
    stuck_exit_seconds: float = setting(300.0, min=0, max=86400, doc="exit 3 (restarted) once stuck; 0 = never")


@dataclass(frozen=True)
class GuardConfig:
    """The load-balancer guard: how many members of a group may be out at once."""

    keep_healthy: int = setting(1, min=0, max=1000, doc="healthy members that always stay in a group")
    max_out_share: float = setting(1.0, min=0.0, max=1.0, doc="at most this share of a group out at once")
    hold_seconds: float = setting(7200.0, min=60, max=86400, doc="a reservation lapses after this unless renewed")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = setting("text", choices=("text", "json"))


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = setting("", doc="host:port for /metrics and /healthz; empty = off")


SECTIONS = {"mns": MnsConfig, "cloud": CloudConfig, "credentials": CredentialsConfig,
            "worker": WorkerConfig, "guard": GuardConfig, "plugins": PluginsConfig, "logging": LoggingConfig,
            "metrics": MetricsConfig}


@dataclass(frozen=True)
class Config:
    mns: MnsConfig = field(default_factory=MnsConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    plugin_sections: dict[str, dict] = field(default_factory=dict)  # raw [plugins.<name>]
    path: str = "<defaults>"


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; `None` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 1024} KiB: not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except Exception as exc:  # whatever else the parser trips on: still a bad file, exit 2
        raise ConfigError(f"{path}: not valid TOML: {type(exc).__name__}: {exc}") from None
    try:
        return parse_config(data, str(path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None


def parse_config(data: dict[str, Any], where: str = "<config>") -> Config:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{toml_name(unknown[0])}] (known: {', '.join(SECTIONS)})")
    built: dict[str, Any] = {}
    plugin_sections: dict[str, dict] = {}
    for name, cls in SECTIONS.items():
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: '{name}' must be a table [{name}]")
        if name == "plugins":
            plugin_sections = {k: v for k, v in section.items() if isinstance(v, dict)}
            section = {k: v for k, v in section.items() if not isinstance(v, dict)}
        built[name] = build_section(cls, section, f"{where}: [{name}]")
    config = Config(**built, plugin_sections=plugin_sections, path=where)
    _check_credentials(config, where)
    listen = config.metrics.listen
    host, sep, port = listen.rpartition(":")
    if listen and not (sep and port.isdigit() and int(port) <= 65535):
        raise ConfigError(f"{where}: [metrics] listen: must be host:port, got {quoted(listen)}")
    return config




def _check_credentials(config: Config, where: str) -> None:
    cred = config.credentials
    if cred.access_key_secret and cred.access_key_secret_file:
        raise ConfigError(f"{where}: [credentials] access_key_secret and access_key_secret_file "
                          "are exclusive")
    if (cred.access_key_secret or cred.access_key_secret_file) and not cred.access_key_id:
        raise ConfigError(f"{where}: [credentials] access_key_id: required with a secret")
    if cred.access_key_id and not (cred.access_key_secret or cred.access_key_secret_file):
        raise ConfigError(f"{where}: [credentials] access_key_secret or access_key_secret_file: "
                          "required with access_key_id")
