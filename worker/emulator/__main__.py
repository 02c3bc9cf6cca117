"""`python -m ecs_worker.emulator [--state FILE] [--host H] [--port P] [--ready-file PATH]`."""
import sys

from .cli import build_parser, main

sys.exit(main(build_parser().parse_args()))
