"""`ecs-worker`: the command line. Each command imports what it needs only when run,
so `ecs-worker --help` stays fast. Exit codes: 0 success, 1 runtime failure, 2 usage or
configuration error.
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ecs-worker",
        description="Consume Alibaba Cloud ECS system events from an MNS queue and hand them "
                    "to plugins (restart stopped instances, pull spot instances out of SLB, ...).")
    parser.add_argument("--version", action="version", version=f"ecs-worker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    p = command("run", "Run the worker: consume the MNS queue until SIGTERM.")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--dry-run", action="store_true", help="change nothing in the cloud; log the plan")

    p = command("replay", "Play saved events (JSON Lines, a JSON object or array; - for stdin) "
                          "through the plugins.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-c", "--config", help="TOML config file (default: built-in defaults)")
    p.add_argument("--dry-run", action="store_true",
                   help="change nothing; treat deferrals as elapsed and report the plan")
    p.add_argument("--json", action="store_true", help="one JSON object per event on stdout")

    p = command("plugins", "List the plugins, where each came from, and its hooks.")
    p.add_argument("-c", "--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="JSON output")

    p = command("check-config", "Validate a config file (and load its plugins); exit 2 if bad.")
    p.add_argument("-c", "--config", required=True, help="TOML config file")

    p = command("emulator", "Serve a local MNS + ECS + SLB emulator for tests and plugin authors.")
    p.add_argument("--state", help="state JSON file (default: a small example fleet)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p.add_argument("--ready-file", help="write the endpoint JSON here once listening")

    p = command("demo", "Start the emulator with a seeded fleet, send a burst of events, run the "
                        "worker until the queue drains, and summarise what it did.")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--ram-policy", metavar="FILE", help="have the emulator enforce this RAM policy document "
                                                         "(e.g. deploy/ram-policy.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"ecs-worker: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _setup(args: argparse.Namespace, dry_run: bool | None = None):
    """Load config and plugins, configure logging; return (config, plugins, runtime)."""
    from .config import load_config
    from .context import Runtime
    from .logsetup import configure_logging
    from .manager import load_plugins

    config = load_config(getattr(args, "config", None))
    configure_logging(config.logging.level, config.logging.format)
    plugins = load_plugins(config)
    runtime = Runtime(config, plugins.configs, dry_run=dry_run or None)
    return config, plugins, runtime


def cmd_replay(args: argparse.Namespace) -> int:
    from .dispatch import Dispatcher, PluginStartupError
    from .replay import run_replay

    config, plugins, runtime = _setup(args, dry_run=args.dry_run)
    dispatcher = Dispatcher(plugins.pm, runtime, config.plugins.call_timeout)
    try:
        dispatcher.startup()
    except PluginStartupError as exc:
        print(f"ecs-worker: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_replay(args.files, dispatcher, dry_run=runtime.dry_run, as_json=args.json)
    except OSError as exc:
        print(f"ecs-worker: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        dispatcher.shutdown()


def cmd_plugins(args: argparse.Namespace) -> int:
    import json

    _, plugins, _ = _setup(args)
    rows = plugins.info()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r.name:<12} {r.origin:<28} {', '.join(r.hooks)}\n{'':<12} {r.location}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config, plugins, _ = _setup(args)
    names = ", ".join(name for name, _ in plugins.pm.list_name_plugin())
    print(f"{config.path}: OK (plugins: {names})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import main as run_main

    return run_main(args)


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator.cli import main as emulator_main

    return emulator_main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "plugins": cmd_plugins,
            "check-config": cmd_check_config, "emulator": cmd_emulator, "demo": cmd_demo}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
