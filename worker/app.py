"""The composition root: every command that needs config, logging, credentials or plugins
(`run`, `replay`, `plugins`, `check-config`, `setup`, `doctor`, `demo`) gets them from `load`
here, and nothing else loads them. Reading `run` top to bottom shows what a running worker is
made of: config, logging, plugins, their runtime, the dispatcher, the store, the queues, the
metrics server, the systemd notifier and the runner. The other commands receive what `load`
built (`setup.Setup`, `doctor.Doctor`, and `connect` for the demo, which cli hands it: only
cli may load the emulator's side, inside a function)."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

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
    _credentials: Any = None

    def credentials(self) -> Any:
        """The credentials provider `[credentials]` names, built on first use (an unreadable
        secret file raises `ConfigError` then); one per command."""
        if self._credentials is None:
            from .cloud.credentials import credentials_provider

            self._credentials = credentials_provider(self.config.credentials)
        return self._credentials


def load(args: argparse.Namespace | None, dry_run: bool | None = None, *, log_level: str | None = None,
         quiet: bool = False, path: Any = None, require: Callable[[Config], None] | None = None) -> App:
    """Load config (from `path`, else `args.config`), configure logging (at `log_level`, else
    the config's; not at all when `quiet`), load the plugins; raises `ConfigError`. `require`
    checks the config before anything else is done with it."""
    config = load_config(path if path is not None else getattr(args, "config", None))
    if require is not None:
        require(config)
    if not quiet:
        configure_logging(log_level or config.logging.level, config.logging.format)
    plugins = load_plugins(config)
    return App(config, plugins, Runtime(config, plugins.configs, dry_run=dry_run or None))


def run(args: argparse.Namespace) -> int:
    """`ecs-worker run -c CONFIG [--dry-run]`: 0 after a clean stop, 2 for configuration."""
    from .observability import metrics
    from .plugin_host.dispatch import Dispatcher, PluginStartupError
    from .observability.notify import SystemdNotifier
    from .consumer.loop import Runner
    from .trust.fleet_key import load_signer
    from .cloud.apis import mns_ram, worker_mns_apis
    from .queue.source import MnsError, MnsQueue
    from .operations.startup_checks import check_all
    from .state.store_open import open_store
    from .state.store_types import StoreError, StoreUnavailable

    try:
        app = load(args, dry_run=getattr(args, "dry_run", False))
        config = app.config
        check_all(config)  # the checks check-config and doctor make, in the same words
        provider = app.credentials()
        app.runtime.signer = load_signer(config.worker.signing_key_file)
        store = open_store(config)
    except StoreUnavailable as exc:  # a network fault: worth a restart, unlike a bad config
        print(f"ecs-worker: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (ConfigError, StoreError) as exc:
        return _fail(exc)
    app.runtime.attach_store(store)
    metrics.watch_gateway(app.runtime.gateway)
    metrics.known_labels([name for name, _ in app.plugins.pm.list_name_plugin()], app.plugins.event_names(),
                         worker_mns_apis())
    if config.metrics.listen:
        from .observability.health import serve as serve_metrics

        try:
            serve_metrics(config.metrics.listen, config.mns.wait_seconds, store.problem)
        except (OSError, ValueError) as exc:
            store.close()
            return _fail(ConfigError(f"{config.path}: [metrics] listen {config.metrics.listen!r}: {exc}"))
    dispatcher = Dispatcher(app.plugins.pm, app.runtime, config.plugins.call_timeout)
    try:
        source = MnsQueue(config.mns.endpoint, config.mns.queue, provider, config.mns.wait_seconds,
                          metrics.mns_request, ram=mns_ram)
        dlq = (MnsQueue(config.mns.endpoint, config.mns.dead_letter_queue, provider, 0, metrics.mns_request,
                        ram=mns_ram)
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


def check_config(args: argparse.Namespace) -> int:
    """`ecs-worker check-config -c CONFIG`: what `run` checks before it starts, without starting."""
    from .cloud.credentials import resolved_by_systemd_only
    from .trust.fleet_key import load_signer
    from .operations.startup_checks import check_all

    app = load(args)
    config, plugins = app.config, app.plugins
    for finding in check_all(config):  # what `run` checks before it starts, in the same words
        if not finding.proven:
            print(f"note: {finding.text}", file=sys.stderr)
    key_file = config.worker.signing_key_file
    if key_file and resolved_by_systemd_only(key_file):
        print(f"note: {key_file!r} is read from $CREDENTIALS_DIRECTORY when the service starts; "
              "not set here, so not checked", file=sys.stderr)
    else:
        load_signer(key_file)  # as `run` reads it: present, 0600, keys long enough
    names = ", ".join(name for name, _ in plugins.pm.list_name_plugin())
    print(f"{config.path}: OK (plugins: {names})")
    return EXIT_OK


def setup(args: argparse.Namespace) -> int:
    """`ecs-worker setup -c CONFIG [--dry-run]`."""
    from .operations.setup import Setup, require_endpoint

    app = load(args, log_level="WARNING", require=require_endpoint)
    # Built first: an unreadable secret file is a config error (exit 2), not a cloud failure.
    return Setup(app.config, app.plugins, dry_run=args.dry_run, provider=app.credentials()).run()


def connect(path: Any, out: Any) -> int:
    """`ecs-worker setup -c PATH` in-process, its lines to `out`, logging left as it is: the
    demo's administrator step (the demo writes its config only once its emulator is up)."""
    from .operations.setup import Setup, require_endpoint

    app = load(None, path=path, quiet=True, require=require_endpoint)
    return Setup(app.config, app.plugins, dry_run=False, out=out, provider=app.credentials()).run()


def doctor(args: argparse.Namespace) -> int:
    """`ecs-worker doctor -c CONFIG [--probe [--probe-wait S]]`."""
    from .operations.doctor import Doctor

    app = load(args, log_level="WARNING")
    probe = getattr(args, "probe_wait", None) if getattr(args, "probe", False) else None
    # The credentials are built when a check first needs them: a bad secret is a ✗ line there.
    return Doctor(app.config, app.plugins, probe=probe, credentials=app.credentials).run()


def _fail(exc: Exception) -> int:
    print(f"ecs-worker: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
