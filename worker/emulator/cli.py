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

from ..emulator_options import EPILOG, add_arguments
from . import Emulator
from .state import StateError, default_state, load_state_file


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="ecs-worker emulator", description="Local MNS + ECS + SLB emulator for the unmodified SDKs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))


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
