"""The composition root: builds the runtime for `run` and `replay` (and the worker the
demo starts, which is `run`), and nothing else does. Reading it top to bottom shows what
a running worker is made of: config, logging, plugins, their runtime, the dispatcher,
the store, the queues, the metrics server, the systemd notifier and the runner."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from .config import Config, ConfigError, load_config
from .plugin_host.context import Runtime
from .observability.logsetup import configure_logging
from .plugin_host.manager import Plugins, load_plugins
from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

log = logging.getLogger("ecs_worker.runner")


@dataclass
class App:
    config: Config
    plugins: Plugins
    runtime: Runtime


def load(args: argparse.Namespace, dry_run: bool | None = None) -> App:
    """Load config and plugins, configure logging; raises `ConfigError`."""
    config = load_config(getattr(args, "config", None))
    configure_logging(config.logging.level, config.logging.format)
    plugins = load_plugins(config)
    return App(config, plugins, Runtime(config, plugins.configs, dry_run=dry_run or None))


def run(args: argparse.Namespace) -> int:
    """`ecs-worker run -c CONFIG [--dry-run]`: 0 after a clean stop, 2 for configuration."""
    from .observability import metrics
    from .cloud.credentials import credentials_provider
    from .plugin_host.dispatch import Dispatcher, PluginStartupError
    from .observability.notify import SystemdNotifier
    from .consumer.loop import Runner
    from .trust.fleet_key import load_signer
    from .queue.source import MnsError, MnsQueue
    from .operations.startup_checks import check_all
    from .state.store_open import open_store
    from .state.store_types import StoreError, StoreUnavailable

    try:
        app = load(args, dry_run=getattr(args, "dry_run", False))
        config = app.config
        check_all(config)  # the checks check-config and doctor make, in the same words
        provider = credentials_provider(config.credentials)
        app.runtime.signer = load_signer(config.worker.signing_key_file)
        store = open_store(config)
    except StoreUnavailable as exc:  # a network fault: worth a restart, unlike a bad config
        print(f"ecs-worker: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (ConfigError, StoreError) as exc:
        return _fail(exc)
    app.runtime.attach_store(store)
    metrics.watch_gateway(app.runtime.gateway)
    metrics.known_labels([name for name, _ in app.plugins.pm.list_name_plugin()])
    if config.metrics.listen:
        from .observability.health import serve as serve_metrics

        try:
            serve_metrics(config.metrics.listen, config.mns.wait_seconds, store.problem)
        except (OSError, ValueError) as exc:
            store.close()
            return _fail(ConfigError(f"{config.path}: [metrics] listen {config.metrics.listen!r}: {exc}"))
    dispatcher = Dispatcher(app.plugins.pm, app.runtime, config.plugins.call_timeout)
    try:
        source = MnsQueue(config.mns.endpoint, config.mns.queue, provider, config.mns.wait_seconds)
        dlq = (MnsQueue(config.mns.endpoint, config.mns.dead_letter_queue, provider, 0)
               if config.mns.dead_letter_queue else None)
        runner = Runner(config, dispatcher, source, store, dlq, SystemdNotifier())
        runner.signals.install()
        runner.on_reload = _reloader(app, getattr(args, "config", None))
        runner.check()
        dispatcher.startup()
    except (MnsError, PluginStartupError) as exc:
        store.close()
        if isinstance(exc, MnsError) and not exc.permanent:  # stopped while MNS was unreachable
            return EXIT_OK
        return _fail(exc)
    if app.runtime.signer is None:
        from .trust.fleet_key import ADVICE

        log.warning("no signing key: plugins' saved states stay in the state store (%s); %s",
                    "shared by the workers using it" if store.shared else "this host's", ADVICE)
    log.info("ecs-worker started: queue %r at %s, concurrency %d, max_pending %d%s",
             config.mns.queue, config.mns.endpoint, config.worker.concurrency,
             config.worker.max_pending, ", dry run" if app.runtime.dry_run else "")
    try:
        runner.start()
        return runner.serve()
    finally:
        dispatcher.shutdown()
        store.close()


def _reloader(app: App, path: str | None):
    from .consumer.reload import reload

    def on_sighup() -> None:
        if path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        app.config = reload(path, app.config, app.plugins, app.runtime)
    return on_sighup


def replay(args: argparse.Namespace) -> int:
    """`ecs-worker replay FILE... [-c CONFIG] [--dry-run] [--json]`."""
    from .plugin_host.dispatch import Dispatcher, PluginStartupError
    from .operations.replay import run_replay

    app = load(args, dry_run=args.dry_run)
    dispatcher = Dispatcher(app.plugins.pm, app.runtime, app.config.plugins.call_timeout)
    try:
        dispatcher.startup()
    except PluginStartupError as exc:
        return _fail(exc)
    try:
        # Under --dry-run nothing waits either: a deferral counts as elapsed, the plan is reported.
        return run_replay(args.files, dispatcher, elapse_deferrals=app.runtime.dry_run, as_json=args.json)
    except OSError as exc:
        print(f"ecs-worker: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        dispatcher.shutdown()


def _fail(exc: Exception) -> int:
    print(f"ecs-worker: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
