"""`ecs-worker emulator`'s options and help, defined once for both ways in (`ecs-worker emulator`
and `python -m ecs_worker.emulator`) — apart from the emulator, so that parsing any command line
never imports the emulator."""
from __future__ import annotations

import argparse

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
