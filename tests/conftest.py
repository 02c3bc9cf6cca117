"""Keep the suite immune to whatever else is installed in the environment: of the installed
(entry-point) plugins, only the project's own example, `hello`, loads — in this process and in
every worker subprocess the tests start (they inherit the environment).

The suite runs in parallel (`make test` passes `-n`, pytest-xdist): every test makes its own
emulator, ports (0: the kernel's choice), files (`tmp_path`) and worker processes, so tests
share nothing but the machine."""
import os

os.environ["ECS_WORKER_LOAD_PLUGINS"] = "hello"

from redis_kit import own_redis, redis_server  # noqa: E402,F401 - fixtures: a real Redis server


def pytest_collection_modifyitems(items):
    """Slow end-to-end tests first, the longest (`slow(seconds=N)`) at the very front: in a
    parallel run they start at once instead of one of them ending the run alone."""
    def order(item):
        mark = item.get_closest_marker("slow")
        return (mark is None, -(mark.kwargs.get("seconds", 0) if mark else 0))
    items.sort(key=order)
