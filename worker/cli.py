"""`ecs-worker`: the command line. Each command imports what it needs only when run,
so `ecs-worker --help` stays fast. Exit codes: 0 success, 1 runtime failure, 2 usage or
configuration error.
"""
from __future__ import annotations

import argparse
import sys

from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(
        prog="ecs-worker",
        description="Consume Alibaba Cloud ECS system events from an MNS queue and hand them "
                    "to plugins (restart stopped instances, pull spot instances out of SLB, ...).")
    parser.add_argument("--version", action="version", version=f"ecs-worker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
        import textwrap  # raw formatting keeps the epilog's lines; wrap the description by hand

        return sub.add_parser(name, help=help, description=textwrap.fill(help, 88), epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("run", "Run the worker: consume the MNS queue until SIGTERM.")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--dry-run", action="store_true", help="change nothing in the cloud; log the plan")

    p = command("replay", "Play saved events (JSON Lines, a JSON object or array; - for stdin) "
                          "through the plugins.",
                epilog="exit codes:\n  0  every event was handled or ignored\n"
                       "  1  an event failed, was invalid or still deferred\n"
                       "  2  usage or configuration error, a plugin failed to start, or a file cannot be read")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-c", "--config", help="TOML config file (default: built-in defaults)")
    p.add_argument("--dry-run", action="store_true",
                   help="change nothing; treat deferrals as elapsed and report the plan")
    p.add_argument("--json", action="store_true", help="one JSON object per event on stdout")

    p = command("plugins", "List the plugins, their versions, where each came from, and its hooks.",
                epilog="ECS_WORKER_LOAD_PLUGINS=a,b limits the installed (entry-point) plugins loaded to "
                       "those names;\nset and empty, it loads none of them. A name no plugin has is an error "
                       "(exit 2).")
    p.add_argument("-c", "--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="JSON output")

    p = command("check-config", "Validate a config file (and load its plugins); exit 2 if bad.")
    p.add_argument("-c", "--config", required=True, help="TOML config file")

    p = command("setup", "Connect an account: create (or check) the queue and the dead-letter queue, "
                         "the CloudMonitor rule that delivers ECS events to the queue, and print the RAM "
                         "policies. Run it again: it changes nothing.",
                epilog="exit codes: 0 done (or nothing to do), 1 a cloud call failed, 2 configuration error")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--dry-run", action="store_true", help="change nothing; print each call it would make")

    p = command("doctor", "Prove the chain without changing anything: the start-up checks, credentials, "
                          "queues, event rule, ECS/SLB permissions, metrics address. One line per check: "
                          "✓ proven, ✗ failed (with its fix), – not provable here (and why).",
                epilog="exit codes: 0 no check failed (– lines are reported, not failures), 1 a check "
                       "failed, 2 configuration error")
    p.add_argument("-c", "--config", required=True, help="TOML config file")
    p.add_argument("--probe", action="store_true",
                   help="also send a marked test event through CloudMonitor (SendDryRunSystemEvent) and watch "
                        "the queue for it (PeekMessage, or a running worker's record): the operator's keys, "
                        "see docs/connect.md")
    p.add_argument("--probe-wait", type=float, default=20.0, metavar="SECONDS",
                   help="how long --probe watches for the test event (default 20)")

    # Listed here; its options are the emulator's own (emulator/cli.py), parsed there: `main`
    # hands `ecs-worker emulator ...` over whole, so parsing never imports the emulator.
    command("emulator", EMULATOR_HELP)

    p = command("demo", "Start the emulator with a seeded fleet, send a burst of events, run the "
                        "worker until the queue drains, and summarise what it did.")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--ram-policy", metavar="FILE", help="have the emulator enforce this RAM policy document "
                                                         "(e.g. deploy/ram-policy.json)")
    p.add_argument("--workers", type=int, default=1, choices=range(1, 9), metavar="N",
                   help="run N workers on the queue (1..8, default 1)")
    p.add_argument("--store", default="", metavar="URL",
                   help='the workers\' shared state store, e.g. "redis://127.0.0.1:6379/0" (default: SQLite, '
                        "one state_dir for all)")
    return parser


EMULATOR_HELP = "Serve a local MNS + ECS + SLB + ALB + NLB + CloudMonitor emulator for tests and plugin authors."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulator"]:
        return cmd_emulator(argv[1:])
    args = build_parser().parse_args(argv)
    from .config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"ecs-worker: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:  # `ecs-worker doctor | head`: the reader left; no traceback
        _quiet_stdout()
        return EXIT_FAILURE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def cmd_replay(args: argparse.Namespace) -> int:
    from .app import replay

    return replay(args)


def cmd_plugins(args: argparse.Namespace) -> int:
    import json

    from .app import load

    plugins = load(args).plugins
    rows = plugins.info()
    if args.json:
        print(json.dumps([{**r.__dict__, "version": plugins.version(r.name)} for r in rows], indent=2))
        return EXIT_OK
    table = [(r.name, plugins.version(r.name), r.origin, ", ".join(r.hooks)) for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(("NAME", "VERSION", "ORIGIN"))]
    print(f"{'NAME':<{widths[0]}}  {'VERSION':<{widths[1]}}  {'ORIGIN':<{widths[2]}}  HOOKS")
    for r, row in zip(rows, table):
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
        print(f"{'':<{widths[0]}}  {r.location}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from .app import check_config

    return check_config(args)


def cmd_run(args: argparse.Namespace) -> int:
    from .app import run

    return run(args)


def cmd_setup(args: argparse.Namespace) -> int:
    from .app import setup

    return setup(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .app import doctor

    return doctor(args)


def cmd_emulator(argv: list[str]) -> int:
    from .emulator.cli import build_parser as emulator_parser, main as emulator_main

    return emulator_main(emulator_parser("ecs-worker emulator", EMULATOR_HELP).parse_args(argv))


def cmd_demo(args: argparse.Namespace) -> int:
    from .app import connect
    from .demo.run import main as demo_main

    # The demo's setup step is loaded by app, the composition root; the demo writes its config
    # only once its emulator is up, so it gets the loader rather than what was loaded.
    return demo_main(args, connect=connect)


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "plugins": cmd_plugins,
            "check-config": cmd_check_config, "demo": cmd_demo,
            "setup": cmd_setup, "doctor": cmd_doctor}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
