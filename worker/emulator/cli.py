"""`ecs-worker emulator` and `python -m ecs_worker.emulator`: run the emulator until SIGTERM/SIGINT.

Exit codes: 0 after a clean stop, 2 for a bad state file or arguments (one-line error on stderr).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from . import Emulator
from .state import StateError, default_state, load_state_file


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--state", metavar="FILE", help="state file (JSON); default: the built-in example state")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free port)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once listening, atomically write the endpoint JSON here")
    return parser


# Both `ecs-worker emulator --help` and `python -m ecs_worker.emulator --help` end with this.
EPILOG = ("The state file's schema, every supported API (MNS, ECS, SLB, ALB, NLB, CloudMonitor), the\n"
          "/_emulator endpoints and the faults: docs/emulator.md in the ecs-worker project.\n"
          "exit codes: 0 stopped by SIGTERM/SIGINT, 2 a bad state file or address")


def build_parser(prog: str = "python -m ecs_worker.emulator",
                 description: str = "Local MNS + ECS + SLB + ALB + NLB + CloudMonitor emulator for the "
                                    "unmodified SDKs.") -> argparse.ArgumentParser:
    """The one definition of the emulator's options, for `ecs-worker emulator` and `python -m`."""
    return add_arguments(argparse.ArgumentParser(
        prog=prog, description=description, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))


def write_atomically(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(args: argparse.Namespace) -> int:
    try:
        state = load_state_file(args.state) if getattr(args, "state", None) else default_state()
        emulator = Emulator(state, host=args.host or "127.0.0.1", port=args.port or 0)
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        emulator.start()
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not emulator.is_loopback:
            print(f"warning: listening on non-loopback {emulator.host}; anyone who can reach it can use it",
                  file=sys.stderr)
        info = json.dumps({**emulator.info(), "pid": os.getpid()})
        if getattr(args, "ready_file", None):
            write_atomically(args.ready_file, info + "\n")
        print(info, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
