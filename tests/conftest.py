"""Keep the suite immune to whatever else is installed in the environment: of the installed
(entry-point) plugins, only the project's own example, `hello`, loads — in this process and in
every worker subprocess the tests start (they inherit the environment)."""
import os

os.environ["ECS_WORKER_LOAD_PLUGINS"] = "hello"

from redis_kit import own_redis, redis_server  # noqa: E402,F401 - fixtures: a real Redis server
