"""Which state store a worker uses, chosen by `[worker] store`: empty, the SQLite store in
`state_dir`; a Redis URL, the shared store on that server (`store_redis.py`).

URLs: `redis://host:6379/0`, `rediss://…` (TLS), `unix:///path/redis.sock`,
`redis+sentinel://host:26379,host2:26379/<service>/0` and `redis+cluster://host:6379`.
The password comes from `[worker] store_password_file` (a bare name is read from
`$CREDENTIALS_DIRECTORY`, like the other secrets), not from the URL, which is logged
without it.
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from ..config import Config, check_store_url
from ..config.store_url import shown
from .store_types import StoreError, StoreUnavailable

TIMEOUT = 2.0  # seconds a store call may wait on the network before it fails safe


def open_store(config: Config):
    """The configured store, opened; raises `ConfigError` (bad URL, unreadable password)
    or `StoreError` (SQLite: the state_dir is unusable). A Redis server that is down is
    no reason not to start: the worker waits for it, saying why."""
    w = config.worker
    if not w.store:
        from .store import Store

        return Store(w.state_dir, w.dedupe_ttl)
    from .store_redis import RedisStore

    connect = redis_connector(config)
    return RedisStore(connect(), w.store_fleet or config.mns.queue, w.state_dir, w.dedupe_ttl,
                      where=shown(w.store), reconnect=connect)


def redis_connector(config: Config) -> Callable[[], Any]:
    """What builds a client for the configured server, its password read once: a forked
    child (`quarantine.py`) calls it again for a client of its own."""
    check_store_url(config)
    w = config.worker
    url = w.store
    scheme = urlsplit(url).scheme
    password = None
    if w.store_password_file:
        from ..cloud.credentials import read_secret_file

        password, _ = read_secret_file(w.store_password_file, f"{config.path}: [worker] store_password_file")
    options = dict(password=password, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    return lambda: _client(url, scheme, options)


def _client(url: str, scheme: str, options: dict) -> Any:
    import redis
    from redis.exceptions import RedisClusterException

    try:
        if scheme == "redis+cluster":
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(url.replace("redis+cluster", "redis", 1), **options)
        if scheme == "redis+sentinel":
            return _sentinel(url, options)
        return redis.Redis.from_url(url, health_check_interval=30, **options)
    except ValueError as exc:
        raise StoreError(f"state store {shown(url)}: {exc}") from None
    except (redis.RedisError, RedisClusterException) as exc:  # a cluster client connects at once
        raise StoreUnavailable(f"state store {shown(url)}: {type(exc).__name__}: {exc}") from None


def _sentinel(url: str, options: dict) -> Any:
    """`redis+sentinel://h1:26379,h2:26379/<service>[/<db>]`: the service's current master."""
    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]) if ":" in h else 26379)
             for h in parts.netloc.split(",") if h]
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise ValueError("redis+sentinel:// needs hosts and a service name")
    db = int(path[1]) if len(path) > 1 else 0
    return Sentinel(hosts, sentinel_kwargs={"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}, **options).master_for(path[0], db=db)
